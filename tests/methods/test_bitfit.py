"""BitFit: only biases (and the head) move; frozen leaves carry no optimizer state."""

import jax
import ml_collections
import numpy as np

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
    sizes = dict(zip(paths, (x.size for x in before), strict=True))
    trainable = sum(
        n for p, n in sizes.items() if p.endswith("/bias") or p.startswith("classifier/")
    )
    assert adam_leaves == 2 * trainable
    report = method.report(params, None)
    assert report == {
        "trainable_params": trainable,
        "trainable_fraction": trainable / sum(sizes.values()),
    }
    # The embeddings' LayerNorm bias; per layer q/k/v/output, two LayerNorm and two FFN
    # biases; the pooler's bias; the classifier.
    assert trainable == 16 + 2 * (4 * 16 + 2 * 16 + 32 + 16) + 16 + (16 * 2 + 2)


def test_name_and_custom_trainable_patterns():
    _, params = models.build(CONFIG, "classification")
    assert BitFit().name == "bitfit"
    method = BitFit(trainable=(r"classifier/.*",))
    labels = dict(
        zip(
            selectors.param_paths(params),
            jax.tree_util.tree_leaves(method.labels(params)),
            strict=True,
        )
    )
    assert {p for p, label in labels.items() if label == "train"} == {
        "classifier/bias",
        "classifier/kernel",
    }
    # The model and the loss are unchanged.
    seen, interventions = method.present(params, {}, 0, True)
    assert seen is params and interventions.set_fields() == ()


def test_bitfit_keeps_training_what_other_methods_own():
    # Composed with movement pruning, BitFit must not freeze the scores (a method's params).
    from methods.bitfit import train_labels

    params = {
        "bert": {"layer": {"kernel": 1.0, "bias": 1.0}},
        "classifier": {"kernel": 1.0},
        "movement_scores": {"bert": {"layer": {"kernel": 1.0}}},
        "distill": {"projection": {"kernel": 1.0}},
    }
    labels = train_labels(params, (r".*/bias",))
    assert labels["bert"]["layer"] == {"kernel": "freeze", "bias": "train"}
    assert labels["classifier"]["kernel"] == "freeze"
    assert labels["movement_scores"]["bert"]["layer"]["kernel"] == "train"
    assert labels["distill"]["projection"]["kernel"] == "train"
