"""Inference latency and size of (compressed) models.

Timing rules, so that numbers compare honestly:
- warm-up calls first (jit compilation, allocator growth are not timed);
- every timed call blocks on its result (`jax.block_until_ready`), since JAX
  dispatches asynchronously and would otherwise time only the dispatch;
- candidates are timed one call at a time, round-robin (`interleave`), so
  that machine noise (other jobs, frequency changes) hits all of them alike;
- best and median over the repeats are reported, never a single call.
"""

import json
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from bertjax.models import convert
from bertjax.models.checkpoints import load_pretrained, resolve
from bertjax.models.heads import BertModel
from bertjax.models.interventions import Interventions

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def time_fn(
    fn: Callable[..., Any],
    *args: Any,
    warmup: int = 1,
    repeats: int = 10,
    timer: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Seconds of each of `repeats` calls `fn(*args)`, each blocked on its result.

    `warmup` untimed calls come first. Results that are not JAX arrays (e.g.
    PyTorch tensors, computed synchronously) are timed as returned.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = timer()
        jax.block_until_ready(fn(*args))
        times.append(timer() - start)
    return times


def interleave(
    candidates: Mapping[str, Callable[[], Any]],
    *,
    warmup: int = 1,
    repeats: int = 10,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds per call of each zero-argument candidate, timed round-robin.

    Each candidate is warmed up `warmup` times, then round r times one call of
    every candidate, starting at candidate r mod n (A B C, B C A, C A B, ...),
    so that noise and whatever one candidate leaves behind (busy-waiting
    thread pools, cache contents) fall on all positions alike.
    """
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            jax.block_until_ready(candidates[name]())
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        first = round_index % len(names)
        for name in names[first:] + names[:first]:
            times[name] += time_fn(candidates[name], warmup=0, repeats=1, timer=timer)
    return times


def best_ms(candidates: Mapping[str, Callable[[], Any]], repeats: int = 10) -> dict[str, float]:
    """Best milliseconds per call of each candidate over `repeats` round-robin calls
    (`interleave`): the number a side-by-side latency table reports."""
    return {name: 1e3 * min(t) for name, t in interleave(candidates, repeats=repeats).items()}


def summarize(times: list[float]) -> dict[str, float]:
    """Best and median of per-call seconds, in milliseconds."""
    return {
        "best_ms": 1e3 * min(times),
        "median_ms": 1e3 * statistics.median(times),
        "repeats": len(times),
    }


def model_size(params: Any) -> dict[str, int]:
    """Parameter count, bytes and nonzero parameters of a pytree of arrays.

    A stored-int8 leaf (`{qvalue, scale[, input_scale]}`) counts as its int8 values'
    parameters, and as the bytes of all its arrays (1 per value, plus the scales)."""
    params = jax.device_get(params)
    quantized = jax.tree_util.tree_leaves(params, is_leaf=convert.is_quantized)
    values = [
        np.asarray(leaf[convert.QVALUE] if convert.is_quantized(leaf) else leaf)
        for leaf in quantized
    ]
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(params)]
    return {
        "params": int(sum(v.size for v in values)),
        "bytes": int(sum(leaf.nbytes for leaf in leaves)),
        "nonzero_params": int(sum(np.count_nonzero(v) for v in values)),
    }


def checkpoint_dir(name_or_path: str | Path) -> Path:
    """A local HF-layout checkpoint directory (a path or a `$BERTJAX_MODELS` name).

    Raises FileNotFoundError naming what is missing; never looks on the hub.
    """
    path = resolve(name_or_path, hub=False)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint directory (no config.json)")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(f"{path}: no weights ({', '.join(WEIGHT_FILES)})")
    return path


def checkpoint_head(directory: str | Path) -> str | None:
    """The sequence head a checkpoint holds: "classification", "regression" or None."""
    hf = json.loads((checkpoint_dir(directory) / "config.json").read_text())
    if "BertForSequenceClassification" not in (hf.get("architectures") or ()):
        return None
    return "regression" if hf.get("problem_type") == "regression" else "classification"


def random_batch(vocab_size: int, batch_size: int, seq_len: int, seed: int = 0) -> dict:
    """A fixed [B, T] int32 batch: random token ids, full attention mask, segment 0."""
    rng = np.random.default_rng(seed)
    low = min(1000, vocab_size - 1)  # past BERT's special and unused tokens
    input_ids = rng.integers(low, vocab_size, (batch_size, seq_len)).astype(np.int32)
    return {
        "input_ids": input_ids,
        "attention_mask": np.ones_like(input_ids),
        "token_type_ids": np.zeros_like(input_ids),
    }


class Forward(NamedTuple):
    """A jitted eval forward and its arguments: `fn(*args)` is one timed call."""

    fn: Callable[..., Any]
    args: tuple
    model: BertModel
    params: Any

    def __call__(self):
        return self.fn(*self.args)


def make_forward(
    model: BertModel,
    params: Any,
    batch_size: int,
    seq_len: int,
    seed: int = 0,
    interventions: Interventions | None = None,
) -> Forward:
    """The deterministic forward of `model` on `random_batch(...)`.

    Returns the logits [B, labels] when the model has a head, else the last
    hidden state [B, T, H]. Params are an argument, not a closed-over constant,
    so XLA cannot fold them into the program. `interventions` go to `model.apply`
    (e.g. `Interventions(matmul=methods.quant.INT8_PRODUCTS)` for int8 matmuls).
    """
    if seq_len > model.config.max_position_embeddings:
        raise ValueError(
            f"seq {seq_len} > max_position_embeddings {model.config.max_position_embeddings}"
        )
    batch = random_batch(model.config.vocab_size, batch_size, seq_len, seed)
    args = jax.device_put(
        (params, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    )
    return Forward(jitted_forward(model, interventions), args, model, params)


def jitted_forward(model: BertModel, interventions: Interventions | None = None) -> Callable:
    """`jit(fn)(params, input_ids, attention_mask, token_type_ids)`: the deterministic
    forward, returning the logits when the model has a head, else the last hidden state."""
    output = "logits" if model.head else "last_hidden_state"

    def forward(params, input_ids, attention_mask, token_type_ids):
        outputs, _ = model.apply(
            {"params": params},
            input_ids,
            attention_mask,
            token_type_ids,
            interventions=interventions,
        )
        return outputs[output]

    return jax.jit(forward)


def load_model(directory: str | Path, head: str | None = "auto") -> tuple[BertModel, Any]:
    """`(model, params)` of a checkpoint, with its own head when `head="auto"`.

    Exported compressed models (fewer heads, narrower FFNs per layer) load at
    their physical size.
    """
    directory = checkpoint_dir(directory)
    if head == "auto":
        head = checkpoint_head(directory)
    return load_pretrained(directory, head=head)


def build_forward(
    directory: str | Path, batch_size: int, seq_len: int, *, head: str | None = "auto", seed=0
) -> Forward:
    """`make_forward` of the model in a checkpoint directory."""
    model, params = load_model(directory, head)
    return make_forward(model, params, batch_size, seq_len, seed)
