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

RNGS = {"state": jax.random.key(0), "params": jax.random.key(1)}
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


# The MiniLM-L6-H384 encoder's Dense kernels: 6 x (4 x 384^2 + 2 x 384 x 1536).
MINILM_KERNELS = 6 * (4 * 384 * 384 + 2 * 384 * 1536)


def test_global_pool_of_minilm_size_prunes_exactly_floor_of_the_target():
    assert MINILM_KERNELS == 10_616_832
    # 0.9 x n = 9,555,148.8 and 0.99 x n = 10,510,663.68: float32 rounds both up.
    for sparsity, exact in ((0.9, 9_555_148), (0.99, 10_510_663)):
        assert np.floor(np.float32(sparsity) * np.float32(MINILM_KERNELS)) == exact + 1
        assert mask_lib.pruned_count(sparsity, MINILM_KERNELS) == exact
        # The schedule's count, traced step and all, once the target is reached.
        schedule = SparsitySchedule(sparsity, start_step=0, end_step=100, every=10)
        count = jax.jit(lambda step, s=schedule: s.count(step)(MINILM_KERNELS))
        assert int(count(100)) == int(count(250)) == exact
        assert int(count(0)) == 0
        one_shot = SparsitySchedule(sparsity, start_step=5)
        assert int(jax.jit(lambda step, s=one_shot: s.count(step)(MINILM_KERNELS))(5)) == exact


def test_keep_mask_and_global_masks_prune_floor_where_float32_rounds_up():
    n = 229_401  # 0.99 x n = 227,106.99; in float32, 227,107
    assert np.floor(np.float32(0.99) * np.float32(n)) == 227_107
    scores = jnp.asarray(np.random.default_rng(3).permutation(n), jnp.float32)
    mask = mask_lib.keep_mask(scores, 0.99)
    assert int((mask == 0).sum()) == 227_106
    np.testing.assert_array_equal(np.asarray(mask), np.asarray(scores) >= 227_106)
    # Pooled over leaves ("global"), the count is that of the pool.
    tree = {"a": scores[:-401].reshape(100, 2290), "b": scores[-401:], "c": jnp.ones(7)}
    masks = mask_lib.compute_masks(tree, {"a": True, "b": True, "c": False}, 0.99, "global")
    zeros = int((masks["a"] == 0).sum() + (masks["b"] == 0).sum())
    assert zeros == 227_106 and masks["c"].shape == ()


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_one_shot_reaches_target_per_layer_or_globally(scope):
    _, params = models.build(CONFIG, "classification")
    method = MagnitudePruning(SparsitySchedule(0.7), scope=scope)
    same, state = method.init(params, RNGS)
    assert same is params
    leaves = _kernels(state["masks"])
    assert len(leaves) == 2 * 6
    total = sum(m.size for _, m in leaves)
    zeros = sum(int((m == 0).sum()) for _, m in leaves)
    if scope == "layer":
        for _, mask in leaves:
            assert int((mask == 0).sum()) == int(np.floor(0.7 * mask.size))
    else:
        assert zeros == int(np.floor(0.7 * total))
    assert method.report(params, state)["sparsity"] == pytest.approx(zeros / total, rel=1e-12)
    # The smallest magnitudes go: per leaf, or over the pool.
    weights = dict(_kernels(params))
    pools = [[p] for p, _ in leaves] if scope == "layer" else [[p for p, _ in leaves]]
    masks = dict(leaves)
    for pool in pools:
        values = np.concatenate([np.abs(np.asarray(weights[p])).ravel() for p in pool])
        kept = np.concatenate([np.asarray(masks[p]).ravel() for p in pool]) == 1
        assert values[~kept].max() <= values[kept].min()
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
    # Counts: 0 before the start, the cubic floor on the way, the exact target after.
    assert [int(schedule.count(t)(1000)) for t in (0, 10, 60, 110, 200)] == [0, 0, 700, 800, 800]
    one_shot = SparsitySchedule(0.5, start_step=3)
    assert one_shot.one_shot and bool(one_shot.is_update_step(3))
    assert [bool(one_shot.is_update_step(t)) for t in (2, 4)] == [False, False]
    assert [int(one_shot.count(t)(7)) for t in (2, 3, 9)] == [0, 3, 3]
    with pytest.raises(ValueError):
        SparsitySchedule(1.0)
    with pytest.raises(ValueError):
        SparsitySchedule(0.5, initial=0.6)


def test_select_that_matches_nothing_is_an_error():
    _, params = models.build(CONFIG, "classification")
    with pytest.raises(ValueError, match="select no parameter"):
        MagnitudePruning(select=(r"nothing/.*",)).init(params, RNGS)


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
    schedule = SparsitySchedule(0.6, start_step=0, end_step=6, every=2)
    method = MagnitudePruning(schedule)
    params, method_state = method.init(params, RNGS)
    state = TrainState.create(params, make_optimizer(TRAIN, 20), 0, method_state=method_state)
    step = jax.jit(
        chex.assert_max_traces(steps.train_step_fn(model, regression=False, method=method), n=1)
    )
    sizes = [m.size for _, m in _kernels(method_state["masks"])]
    previous = [np.ones(m.shape) for _, m in _kernels(method_state["masks"])]
    for i in range(8):
        state, _ = step(state, _batch(i))
        done = i + 1  # step i is the (i+1)-th update: masks follow the schedule at 2, 4, 6
        at = done if done in (2, 4, 6) else 2 * (done // 2)
        target = 0.6 if at >= 6 else 0.6 * (1 - (1 - at / 6) ** 3)
        masks = [np.asarray(m) for _, m in _kernels(state.method_state["masks"])]
        assert [int((m == 0).sum()) for m in masks] == [int(target * n) for n in sizes], done
        # Weights once pruned stay pruned: each mask lies inside the previous one.
        for mask, before in zip(masks, previous, strict=True):
            assert np.all(mask <= before)
        previous = masks
    assert method.report(state.params, state.method_state)["sparsity"] == sum(
        int(0.6 * n) for n in sizes
    ) / sum(sizes)
    batch = _batch(9)
    seen, _ = method.present(state.params, state.method_state, 8, True)

    def loss(p):
        outputs, _, _ = steps.forward(model, method, p, state.method_state, 8, batch, train=True)
        return steps.task_loss(outputs["logits"], batch["labels"], batch["weights"], False)

    grads = jax.jit(jax.grad(loss))(state.params)
    for (path, mask), (_, weight), (_, grad) in zip(
        _kernels(state.method_state["masks"]), _kernels(seen), _kernels(grads), strict=True
    ):
        off = np.asarray(mask) == 0
        assert off.any() and (~off).any(), path
        assert np.all(np.asarray(weight)[off] == 0), path
        assert np.all(np.asarray(grad)[off] == 0), path
        assert np.abs(np.asarray(grad)[~off]).max() > 0, path
    final, config = method.finalize(state.params, state.method_state, CONFIG)
    chex.assert_trees_all_equal(final, seen)
    assert config is CONFIG


def test_forward_only_passes_change_no_mask():
    _, params = models.build(CONFIG, "classification")
    method = MagnitudePruning(SparsitySchedule(0.5, start_step=0, end_step=2, every=1))
    params, state = method.init(params, RNGS)
    # Step 0 is an update step (done = 1), but a calibration pass has no gradient.
    same = method.update(state, params, None, {"metrics": {}, "stats": {}}, 0)
    assert same is state
    updated = method.update(state, params, params, {"metrics": {}, "stats": {}}, 0)
    assert method.report(params, state)["sparsity"] == 0.0
    assert method.report(params, updated)["sparsity"] > 0.4


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
    _, state = method.init(params, RNGS)
    assert method.report(params, state)["sparsity"] == 0.5
    for path, mask in _kernels(state["masks"]):
        groups = np.asarray(mask).reshape(-1, 4, mask.shape[-1])
        assert np.all(groups.sum(axis=1) == 2), path


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
    assert method.name == (
        "prune_magnitude+prune_structured+quant_weights_w8+activationquantization+bitfit"
        "+layer_drop_top1"
    )
    params, method_state = method.init(params, RNGS)
    tx = method.wrap_optimizer(make_optimizer(TRAIN, 20), params)
    state = TrainState.create(params, tx, 0, method_state=method_state)
    step = jax.jit(
        chex.assert_max_traces(steps.train_step_fn(model, regression=False, method=method), n=1)
    )
    for i in range(4):
        state, values = step(state, _batch(i))
    assert np.isfinite(float(values["loss"]))
    assert float(state.method_state[1]["head_mask"].sum()) == 2  # one of two heads per layer
    assert method.methods[0].report(state.params, state.method_state[0])["sparsity"] == 0.5
    _, interventions = method.present(state.params, state.method_state, 4, False)
    assert interventions.set_fields() == ("head_mask", "ffn_mask", "layers", "matmul")


def test_sparse_bytes_counts_kept_values_and_a_bitmap():
    params = {"a": jnp.ones((4, 4)), "b": jnp.ones((3,))}
    masks = {"a": jnp.asarray(np.eye(4), jnp.float32), "b": jnp.ones(())}
    selected = {"a": True, "b": False}
    # 4 kept float32 values + 16 bits of bitmap, plus b's dense 3 x 4 bytes.
    assert mask_lib.sparse_bytes(params, masks, selected) == 4 * 4 + 2 + 12


def test_schedule_reaches_its_target_when_the_range_is_not_a_multiple_of_every():
    # MRPC, 3 epochs: pruning over steps 115..230 every 10 steps; step 230 must update.
    schedule = SparsitySchedule(0.9, start_step=115, end_step=230, every=10)
    updates = [s for s in range(0, 346) if bool(schedule.is_update_step(s))]
    assert updates[0] == 115 and updates[-1] == 230 and 225 in updates
    assert int(schedule.count(230)(10_616_832)) == 9_555_148
