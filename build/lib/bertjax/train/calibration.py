"""Forward-only calibration passes over training batches, run by the loop before training.

- `calibrate`: feeds `method.calibration_batches` training batches through
  the model as the method presents it (`steps.forward`, no dropout) and folds
  the statistics the model recorded into the method state (`update` with no
  gradient): static activation ranges for post-training quantization.
- `resolve_layer_drop`: for `config.layer_drop.strategy == "contribution"`,
  averages each layer's input/output cosine similarity over training batches
  of the unpruned model and returns the config with the `drop` most similar
  layers as `config.layer_drop.layers` (the method is then built explicit).

Both read the first N batches of epoch 0, then 1, ... (the same seed as
training), so a rerun calibrates identically.
"""

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from bertjax.data import pipeline
from bertjax.data.tokenizer import Encoded
from bertjax.train import mesh as mesh_lib
from bertjax.train import steps
from bertjax.train.state import TrainState
from methods.base import Method
from methods.pruning.layer_drop import layer_similarity, least_contributing

DEFAULT_CONTRIBUTION_BATCHES = 8


def calibration_batches(
    encoded: Encoded, batch_size: int, seed: int, count: int
) -> Iterator[dict[str, np.ndarray]]:
    """The model inputs of the first `count` training batches (further epochs if needed)."""
    epoch, given = 0, 0
    while given < count:
        for batch in pipeline.train_batches(encoded, batch_size, seed, epoch):
            if given == count:
                return
            yield {k: batch[k] for k in steps.MODEL_INPUTS}
            given += 1
        epoch += 1


def calibrate(
    model,
    method: Method,
    state: TrainState,
    encoded: Encoded,
    batch_size: int,
    seed: int,
    mesh,
    *,
    desc: str = "calibrate",
    disable: bool = False,
) -> TrainState:
    """`state` with `method.calibration_batches` batches observed (unchanged for 0)."""
    count = method.calibration_batches
    if not count:
        return state
    step = steps.make_calibration_step(model, method)
    method_state = state.method_state
    batches = calibration_batches(encoded, batch_size, seed, count)
    for inputs in tqdm(batches, total=count, desc=desc, disable=disable, dynamic_ncols=True):
        method_state = step(state.params, method_state, mesh_lib.shard_batch(inputs, mesh))
    return state.replace(method_state=method_state)


def contribution_similarity(
    model, params, encoded: Encoded, batch_size: int, seed: int, count: int, mesh
) -> np.ndarray:
    """[L] input/output cosine similarity of each layer over the real tokens of `count`
    training batches (a token-weighted mean; see `layer_drop.layer_similarity`)."""
    num_layers = model.config.num_hidden_layers

    @jax.jit
    def similarity_step(params, inputs):
        _, inter, _ = steps.forward(
            model, Method(), params, {}, 0, inputs, train=False, collect=("embeddings", "hidden")
        )
        tokens = jnp.sum(inputs["attention_mask"]).astype(jnp.float32)
        return layer_similarity(inter, inputs["attention_mask"], num_layers) * tokens, tokens

    total, tokens = np.zeros(num_layers), 0.0
    for inputs in calibration_batches(encoded, batch_size, seed, count):
        weighted, batch_tokens = similarity_step(params, mesh_lib.shard_batch(inputs, mesh))
        total += np.asarray(weighted, np.float64)
        tokens += float(batch_tokens)
    return total / max(tokens, 1.0)


def resolve_layer_drop(
    config: ConfigDict, model, params, encoded: Encoded, mesh
) -> tuple[ConfigDict, dict]:
    """`(config, report)`: for contribution-based layer dropping without given layers,
    a copy of `config` whose `layer_drop.layers` are the `drop` layers of highest
    input/output similarity over `layer_drop.calibration_batches` (default 8)
    training batches, and `{"layer_similarity": [...]}`; else `(config, {})`."""
    block = config.get("layer_drop")
    if block is None or block.strategy != "contribution" or block.layers:
        return config, {}
    count = block.get("calibration_batches", DEFAULT_CONTRIBUTION_BATCHES)
    if count < 1:
        raise ValueError(f"layer_drop.calibration_batches must be >= 1, got {count}")
    similarity = contribution_similarity(
        model,
        mesh_lib.replicate(params, mesh),
        encoded,
        config.train.batch_size,
        config.train.seed,
        count,
        mesh,
    )
    config = config.copy_and_resolve_references()
    config.layer_drop.layers = least_contributing(similarity, block.drop)
    return config, {"layer_similarity": [round(float(s), 6) for s in similarity]}
