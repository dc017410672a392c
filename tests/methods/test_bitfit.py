"""BitFit: only biases (and the head) move; frozen leaves carry no optimizer state."""

import jax
import ml_collections
import numpy as np
import optax

from bertjax import models
from bertjax.train import steps
from bertjax.train.optimizer import make_optimizer
from bertjax.train.state import TrainState
from methods import selectors
from methods.bitfit import BitFit

CONFIG = models.BertConfig(
    vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
)
TRAIN = ml_collections.ConfigDict(
    dict(learning_rate=1e-2, warmup_ratio=0.0, weight_decay=0.01, max_grad_norm=1.0)
)


def test_only_biases_and_head_change_and_frozen_have_no_adam_state():
    model, params = models.build(CONFIG, "classification")
    method = BitFit()
    tx = method.wrap_optimizer(make_optimizer(TRAIN, 10), params)
    state = TrainState.create(params, tx, 0)
    step = steps.make_train_step(model, regression=False, method=method, donate=False)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 64, (8, 10)).astype(np.int32)
    batch = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
        "labels": rng.integers(0, 2, 8).astype(np.int32),
        "weights": np.ones(8, np.float32),
    }
    new = state
    for _ in range(3):
        new, _ = step(new, batch)
    paths = selectors.param_paths(params)
    before, after = jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(new.params)
    for path, a, b in zip(paths, before, after, strict=True):
        trainable = path.endswith("/bias") or path.startswith("classifier/")
        if trainable:
            assert not np.array_equal(a, b), path
        else:
            assert np.array_equal(a, b), path  # bit-identical

    # Adam moments exist only for trainable leaves.
    adam_leaves = sum(
        x.size
        for x in jax.tree_util.tree_leaves(new.opt_state)
        if hasattr(x, "size") and x.ndim > 0
    )
    report = method.report(params, None)
    assert adam_leaves == 2 * report["trainable_params"]
    assert 0 < report["trainable_fraction"] < 0.1
    assert isinstance(tx, optax.GradientTransformation)
