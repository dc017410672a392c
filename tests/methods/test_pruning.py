"""Magnitude pruning: exact sparsity, schedules, masked weights stay masked."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bertjax import models
from bertjax.train import steps
from bertjax.train.optimizer import make_optimizer
from bertjax.train.state import TrainState
from methods import selectors
from methods.pruning import MagnitudePruning, SparsitySchedule
from methods.pruning import masks as mask_lib

CONFIG = models.BertConfig(
    vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=36
)
TRAIN = ml_collections.ConfigDict(
    dict(learning_rate=1e-2, warmup_ratio=0.0, weight_decay=0.01, max_grad_norm=1.0)
)


def _kernels(tree):
    """Selected (path, leaf) pairs of a params-shaped tree."""
    paths = selectors.param_paths(tree)
    return [
        (p, x)
        for p, x in zip(paths, jax.tree_util.tree_leaves(tree), strict=True)
        if "encoder" in p and p.endswith("kernel")
    ]


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_keep_mask_prunes_exactly_the_target_count(sparsity):
    scores = jnp.asarray(np.random.default_rng(0).normal(size=(7, 13)))
    mask = mask_lib.keep_mask(jnp.abs(scores), sparsity)
    assert int((mask == 0).sum()) == int(np.floor(sparsity * 91))
    # The pruned entries are the smallest ones.
    kept = np.abs(np.asarray(scores))[np.asarray(mask) == 1]
    dropped = np.abs(np.asarray(scores))[np.asarray(mask) == 0]
    if dropped.size:
        assert dropped.max() <= kept.min()


def test_keep_mask_is_exact_with_ties():
    mask = mask_lib.keep_mask(jnp.zeros((10,)), 0.35)
    assert int((mask == 0).sum()) == 3


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_one_shot_reaches_target_per_layer_or_globally(scope):
    _, params = models.build(CONFIG, "classification")
    method = MagnitudePruning(SparsitySchedule(0.7), scope=scope)
    state = method.init(params, None)
    leaves = _kernels(state["masks"])
    assert len(leaves) == 2 * 6
    total = sum(m.size for _, m in leaves)
    zeros = sum(int((m == 0).sum()) for _, m in leaves)
    if scope == "layer":
        for _, mask in leaves:
            assert int((mask == 0).sum()) == int(np.floor(0.7 * mask.size))
    else:
        assert zeros == int(np.floor(0.7 * total))
    assert method.report(params, state)["sparsity"] == pytest.approx(zeros / total)
    # Everything unselected keeps a scalar all-ones mask.
    assert state["masks"]["classifier"]["kernel"].shape == ()


def test_cubic_schedule_values():
    schedule = SparsitySchedule(0.8, start_step=10, end_step=110, every=10)
    values = [float(schedule.sparsity(t)) for t in (0, 10, 60, 110, 200)]
    np.testing.assert_allclose(values, [0.0, 0.0, 0.8 * (1 - 0.5**3), 0.8, 0.8], atol=1e-6)
    assert [bool(schedule.is_update_step(t)) for t in (5, 10, 15, 20, 110, 120)] == [
        False,
        True,
        False,
        True,
        True,
        False,
    ]
    one_shot = SparsitySchedule(0.5, start_step=3)
    assert one_shot.one_shot and bool(one_shot.is_update_step(3))
    with pytest.raises(ValueError):
        SparsitySchedule(1.0)


def test_select_that_matches_nothing_is_an_error():
    _, params = models.build(CONFIG, "classification")
    with pytest.raises(ValueError, match="select no parameter"):
        MagnitudePruning(select=(r"nothing/.*",)).init(params, None)


def _batch(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 64, (8, 10)).astype(np.int32)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
        "labels": rng.integers(0, 2, 8).astype(np.int32),
        "weights": np.ones(8, np.float32),
    }


def test_gradual_training_keeps_pruned_weights_at_zero_with_zero_gradient():
    model, params = models.build(CONFIG, "classification")
    method = MagnitudePruning(SparsitySchedule(0.6, start_step=0, end_step=6, every=2))
    state = TrainState.create(
        params, make_optimizer(TRAIN, 20), 0, method_state=method.init(params, None)
    )
    step = jax.jit(
        chex.assert_max_traces(steps.train_step_fn(model, regression=False, method=method), n=1)
    )
    sparsities = []
    for i in range(8):
        state, _ = step(state, _batch(i))
        sparsities.append(method.report(state.params, state.method_state)["sparsity"])
    # Monotone rise to exactly the target (floor per layer), then constant.
    assert sparsities == sorted(sparsities)
    assert sparsities[-1] == pytest.approx(0.6, abs=0.01) and sparsities[-1] == sparsities[-3]
    seen = method.forward_params(state.params, state.method_state)
    grads = jax.grad(
        lambda p: steps.task_loss(
            model.apply(
                {"params": method.forward_params(p, state.method_state)},
                *(_batch(9)[k] for k in steps.MODEL_INPUTS),
            )[0]["logits"],
            _batch(9)["labels"],
            _batch(9)["weights"],
            False,
        )
    )(state.params)
    for (path, mask), (_, weight), (_, grad) in zip(
        _kernels(state.method_state["masks"]), _kernels(seen), _kernels(grads), strict=True
    ):
        off = np.asarray(mask) == 0
        assert off.any(), path
        assert np.all(np.asarray(weight)[off] == 0), path
        assert np.all(np.asarray(grad)[off] == 0), path
    final, _ = method.finalize(state.params, state.method_state, CONFIG)
    chex.assert_trees_all_equal(final, seen)


def test_two_of_four_keeps_the_two_largest_in_every_group():
    scores = jnp.asarray(np.random.default_rng(1).normal(size=(8, 3)))
    mask = np.asarray(mask_lib.n_of_m_mask(jnp.abs(scores), 2, 4))
    groups = mask.reshape(2, 4, 3)
    assert np.all(groups.sum(axis=1) == 2)
    values = np.abs(np.asarray(scores)).reshape(2, 4, 3)
    for g in range(2):
        for c in range(3):
            kept, dropped = (
                values[g, :, c][groups[g, :, c] == 1],
                values[g, :, c][groups[g, :, c] == 0],
            )
            assert dropped.max() <= kept.min()
    with pytest.raises(ValueError, match="multiple of m=4"):
        mask_lib.n_of_m_mask(jnp.ones((6, 2)), 2, 4)


def test_n_of_m_scope_in_the_method():
    _, params = models.build(CONFIG, "classification")
    method = MagnitudePruning(SparsitySchedule(0.5), scope="n:m", n_of_m=(2, 4))
    state = method.init(params, None)
    assert method.report(params, state)["sparsity"] == pytest.approx(0.5)


def test_one_trace_with_every_method_composed():
    from methods.base import compose
    from methods.bitfit import BitFit
    from methods.pruning.layer_drop import LayerDrop
    from methods.pruning.structured import StructuredPruning
    from methods.quant import ActivationQuantization, QuantSpec, WeightQuantization

    model, params = models.build(CONFIG, "classification")
    method = compose(
        [
            MagnitudePruning(SparsitySchedule(0.5, start_step=0, end_step=4, every=2)),
            StructuredPruning(num_heads=2, head_sparsity=0.5, ffn_sparsity=0.25, prune_step=2),
            WeightQuantization(QuantSpec(8)),
            ActivationQuantization(QuantSpec(8, symmetric=False)),
            BitFit(),
            LayerDrop(num_layers=2, drop=1, strategy="top"),
        ]
    )
    tx = method.wrap_optimizer(make_optimizer(TRAIN, 20), params)
    state = TrainState.create(params, tx, 0, method_state=method.init(params, None))
    step = jax.jit(
        chex.assert_max_traces(steps.train_step_fn(model, regression=False, method=method), n=1)
    )
    for i in range(4):
        state, values = step(state, _batch(i))
    assert np.isfinite(float(values["loss"]))
    assert float(state.method_state[1]["head_mask"].sum()) == 2  # one of two heads per layer


def test_sparse_bytes_counts_kept_values_and_a_bitmap():
    params = {"a": jnp.ones((4, 4)), "b": jnp.ones((3,))}
    masks = {"a": jnp.asarray(np.eye(4), jnp.float32), "b": jnp.ones(())}
    selected = {"a": True, "b": False}
    # 4 kept float32 values + 16 bits of bitmap, plus b's dense 3 x 4 bytes.
    assert mask_lib.sparse_bytes(params, masks, selected) == 4 * 4 + 2 + 12
