"""Movement pruning (Sanh et al. 2020): trainable scores behind a straight-through mask.

The model sees W' = W * M(S): pruned weights get no gradient, the scores get
dL/dW' * W; hard masks keep the top-k scores on the schedule's steps, soft
masks keep the scores above a threshold with an L1 term in the loss; the
scores have their own optimizer.
"""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bertjax import models
from bertjax.train import steps
from bertjax.train.optimizer import make_optimizer
from bertjax.train.state import TrainState
from methods import selectors
from methods.base import Context
from methods.pruning import MovementPruning, SparsitySchedule
from methods.pruning import from_config as pruning_from_config
from methods.pruning import masks as mask_lib
from methods.pruning.movement import SCORES, score_paths

RNGS = {"state": jax.random.key(0), "params": jax.random.key(1)}
AUX = {"metrics": {}, "stats": {}}
_rng = np.random.default_rng(0)
PARAMS = {
    "bert": {
        "encoder": {
            "layer": {
                "0": {
                    "output": {
                        "dense": {
                            "kernel": jnp.asarray(_rng.normal(size=(6, 5)), jnp.float32),
                            "bias": jnp.asarray(_rng.normal(size=(5,)), jnp.float32),
                        }
                    },
                    "intermediate": {
                        "dense": {"kernel": jnp.asarray(_rng.normal(size=(5, 4)), jnp.float32)}
                    },
                }
            }
        }
    }
}
OUT = ("bert", "encoder", "layer", "0", "output", "dense")
MID = ("bert", "encoder", "layer", "0", "intermediate", "dense")


def _at(tree, where, leaf="kernel"):
    for key in where:
        tree = tree[key]
    return tree[leaf]


def _set(tree, where, value, leaf="kernel"):
    """A copy of `tree` with one leaf replaced."""
    tree = jax.tree_util.tree_map(lambda x: x, tree)
    node = tree
    for key in where:
        node = node[key]
    node[leaf] = value
    return tree


def _with_scores(params, out, mid):
    scores = _set(_set(params[SCORES], OUT, jnp.asarray(out, jnp.float32)), MID, mid)
    return {**params, SCORES: scores}


def test_init_adds_zero_scores_under_the_selected_weights_paths():
    method = MovementPruning()
    params, state = method.init(PARAMS, RNGS)
    assert score_paths(params) == [
        "bert/encoder/layer/0/intermediate/dense/kernel",
        "bert/encoder/layer/0/output/dense/kernel",
    ]
    assert _at(params[SCORES], OUT, "bias") is None  # unselected: no score
    for where in (OUT, MID):
        np.testing.assert_array_equal(
            _at(params[SCORES], where), np.zeros(_at(PARAMS, where).shape)
        )
    assert np.all(np.asarray(_at(state["masks"], OUT)) == 1)
    # The model never sees the scores, and at init it sees the weights as they are.
    seen, interventions = method.present(params, state, 0, True)
    assert SCORES not in seen and interventions.set_fields() == ()
    chex.assert_trees_all_equal(seen, PARAMS)


def test_pruned_weights_get_no_gradient_and_scores_get_grad_times_weight():
    method = MovementPruning(SparsitySchedule(0.5))
    params, state = method.init(PARAMS, RNGS)
    mask = np.ones((6, 5), np.float32)
    mask[1:4, 2:] = 0.0
    state = {"masks": _set(state["masks"], OUT, jnp.asarray(mask))}
    params = _with_scores(params, _rng.normal(size=(6, 5)), _rng.normal(size=(5, 4)))
    target = jnp.asarray(_rng.normal(size=(6, 5)), jnp.float32)

    def loss(p):
        seen, _ = method.present(p, state, 0, True)
        return jnp.sum(jnp.sin(_at(seen, OUT)) * target) + jnp.sum(_at(seen, OUT, "bias") ** 2)

    weight = np.asarray(_at(PARAMS, OUT))
    seen, _ = method.present(params, state, 0, True)
    np.testing.assert_array_equal(_at(seen, OUT), weight * mask)  # forward: W * M, exactly
    grads = jax.grad(loss)(params)
    upstream = np.cos(weight * mask) * np.asarray(target)  # dL/dW'
    grad_w = np.asarray(_at(grads, OUT))
    assert np.all(grad_w[mask == 0] == 0)  # pruned weights: no gradient at all
    np.testing.assert_allclose(grad_w, upstream * mask, rtol=1e-6)
    # Scores learn everywhere, pruned or not: dL/dS = dL/dW' * W.
    grad_s = np.asarray(_at(grads[SCORES], OUT))
    np.testing.assert_allclose(grad_s, upstream * weight, rtol=1e-6)
    assert np.abs(grad_s[mask == 0]).min() > 0
    # Unselected leaves pass as they are.
    np.testing.assert_allclose(_at(grads, OUT, "bias"), 2 * _at(PARAMS, OUT, "bias"), rtol=1e-6)
    # Weights outside the loss: no gradient on either side.
    assert not np.any(np.asarray(_at(grads[SCORES], MID)))


CONFIG = models.BertConfig(
    vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
)


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


def _kernel_pairs(tree):
    paths = selectors.param_paths(tree)
    leaves = jax.tree_util.tree_leaves(tree)
    return {p: x for p, x in zip(paths, leaves, strict=True) if "encoder" in p and "kernel" in p}


def test_through_the_model_the_straight_through_gradients_hold():
    model, params = models.build(CONFIG, "classification")
    method = MovementPruning(SparsitySchedule(0.5, start_step=0, end_step=1))
    params, state = method.init(params, RNGS)
    # Random scores, and masks from them at the target: what `update` gives at step 0.
    key = iter(jax.random.split(jax.random.key(3), 100))
    params[SCORES] = jax.tree_util.tree_map(
        lambda s: jax.random.normal(next(key), s.shape), params[SCORES]
    )
    state = method.update(state, params, params, AUX, 0)
    assert method.report(params, state)["sparsity"] == 0.5
    batch = _batch(0)

    def task(outputs):
        return steps.task_loss(outputs["logits"], batch["labels"], batch["weights"], False)

    def loss(p):
        return task(steps.forward(model, method, p, state, 0, batch, train=True)[0])

    def loss_of_seen(seen):  # the loss as a function of what the model sees, W'
        return task(model.apply({"params": seen}, *(batch[k] for k in steps.MODEL_INPUTS))[0])

    seen, _ = method.present(params, state, 0, True)
    upstream = _kernel_pairs(jax.jit(jax.grad(loss_of_seen))(seen))  # dL/dW'
    grads = jax.jit(jax.grad(loss))(params)
    weights, masks = _kernel_pairs(params), _kernel_pairs(state["masks"])
    score_grads = _kernel_pairs(grads[SCORES])
    assert len(score_grads) == 2 * 6
    for path, grad in _kernel_pairs({k: v for k, v in grads.items() if k != SCORES}).items():
        off = np.asarray(masks[path]) == 0
        assert off.any() and np.all(np.asarray(grad)[off] == 0), path
        np.testing.assert_allclose(grad, upstream[path] * masks[path], rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(
            score_grads[path], upstream[path] * weights[path], rtol=1e-5, atol=1e-9
        )


def test_hard_masks_keep_the_top_k_scores_on_the_schedule_steps():
    schedule = SparsitySchedule(0.4, start_step=0, end_step=4, every=2)
    method = MovementPruning(schedule)
    params, state = method.init(PARAMS, RNGS)
    out, mid = _rng.permutation(30).reshape(6, 5), _rng.permutation(20).reshape(5, 4)
    params = _with_scores(params, out, mid)
    # Step 0 is the first update (done = 1): not a schedule step; forward-only: no change.
    assert method.update(state, params, None, AUX, 1) is state
    unchanged = method.update(state, params, params, AUX, 0)
    assert np.all(np.asarray(_at(unchanged["masks"], OUT)) == 1)
    # done = 2: the cubic schedule's floor(0.35 n); done = 4: the target, floor(0.4 n).
    for step, fraction in ((1, 0.35), (3, 0.4)):
        state = method.update(state, params, params, AUX, step)
        for where, scores, n in ((OUT, out, 30), (MID, mid, 20)):
            mask = np.asarray(_at(state["masks"], where))
            pruned = int(np.floor(fraction * n))
            np.testing.assert_array_equal(mask, scores >= pruned)  # the lowest scores go
    assert method.report(params, state)["sparsity"] == (12 + 8) / 50
    # Globally, the pool of both kernels ranks together.
    pooled = MovementPruning(SparsitySchedule(0.5, start_step=1), scope="global")
    both = _with_scores(params, out, mid + 30)  # every `mid` score above every `out` score
    masks = pooled.update(pooled.init(PARAMS, RNGS)[1], both, both, AUX, 0)["masks"]
    np.testing.assert_array_equal(_at(masks, OUT), out >= 25)
    assert np.all(np.asarray(_at(masks, MID)) == 1)


def test_soft_masks_threshold_the_scores_every_step_and_l1_joins_the_loss():
    method = MovementPruning(movement="soft", threshold=0.1, l1=0.5)
    params, state = method.init(PARAMS, RNGS)
    out, mid = _rng.normal(size=(6, 5)), _rng.normal(size=(5, 4))
    params = _with_scores(params, out, mid)
    for step in (0, 7, 123):  # any step: soft masks follow no schedule
        masks = method.update(state, params, params, AUX, step)["masks"]
        np.testing.assert_array_equal(_at(masks, OUT), out > 0.1)
        np.testing.assert_array_equal(_at(masks, MID), mid > 0.1)
    assert method.update(state, params, None, AUX, 0) is state
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    expected = (sigmoid(out).mean() + sigmoid(mid).mean()) / 2
    task = jnp.asarray(2.0)
    loss, metrics = method.loss(task, None, None, {}, params, state, 0)
    np.testing.assert_allclose(metrics["score_l1"], expected, rtol=1e-6)
    np.testing.assert_allclose(loss, 2.0 + 0.5 * expected, rtol=1e-6)
    # The L1 term pulls every score down: d/dS = l1 * sigmoid'(S) / size / kernels.
    grad = jax.grad(lambda p: method.loss(task, None, None, {}, p, state, 0)[0])(params)
    np.testing.assert_allclose(
        _at(grad[SCORES], OUT), 0.5 * sigmoid(out) * (1 - sigmoid(out)) / 30 / 2, rtol=1e-5
    )
    # Hard movement (and soft without L1) leave the loss alone.
    for other in (MovementPruning(), MovementPruning(movement="soft", l1=0.0)):
        assert other.loss(task, None, None, {}, params, state, 0) == (task, {})


@pytest.mark.parametrize("score_optimizer", ["sum", "adam"])
def test_scores_have_their_own_optimizer(score_optimizer):
    method = MovementPruning(score_lr=0.5, score_optimizer=score_optimizer)
    params, _ = method.init(PARAMS, RNGS)
    grads = jax.tree_util.tree_map(lambda p: jnp.asarray(_rng.normal(size=p.shape)), params)
    tx = method.wrap_optimizer(optax.sgd(0.1), params)
    opt_state = tx.init(params)
    updates, _ = tx.update(grads, opt_state, params)
    for path, update in _kernel_pairs({k: v for k, v in updates.items() if k != SCORES}).items():
        np.testing.assert_allclose(update, -0.1 * _kernel_pairs(grads)[path], rtol=1e-6)
    np.testing.assert_allclose(_at(updates, OUT, "bias"), -0.1 * _at(grads, OUT, "bias"))
    score_update, score_grad = _at(updates[SCORES], OUT), np.asarray(_at(grads[SCORES], OUT))
    if score_optimizer == "sum":  # the paper's S <- S - lr * dL/dS
        np.testing.assert_allclose(score_update, -0.5 * score_grad, rtol=1e-6)
    else:  # Adam's first step: lr in the direction of -sign(dL/dS)
        np.testing.assert_allclose(score_update, -0.5 * np.sign(score_grad), rtol=1e-4)
        # Adam moments exist for the scores only (two per score), none for the model.
        moments = sum(x.size for x in jax.tree_util.tree_leaves(opt_state) if x.ndim > 0)
        assert moments == 2 * (30 + 20)


def test_train_steps_learn_scores_and_reach_the_exact_target():
    model, params = models.build(CONFIG, "classification")
    schedule = SparsitySchedule(0.5, start_step=0, end_step=3, every=1)
    method = MovementPruning(schedule, score_lr=0.01, score_optimizer="adam")
    params, method_state = method.init(params, RNGS)
    train = ml_collections.ConfigDict(
        dict(learning_rate=1e-3, warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0)
    )
    tx = method.wrap_optimizer(make_optimizer(train, 10), params)
    state = TrainState.create(params, tx, 0, method_state=method_state)
    step = jax.jit(
        chex.assert_max_traces(steps.train_step_fn(model, regression=False, method=method), n=1)
    )
    for i in range(3):  # the third update (done = 3) is the schedule's last
        state, _ = step(state, _batch(i))
    scores, masks = _kernel_pairs(state.params[SCORES]), _kernel_pairs(state.method_state["masks"])
    for path, score in scores.items():
        score = np.asarray(score)
        assert np.abs(score).max() > 0, path
        # The masks are the top half of the scores that the last update step saw.
        np.testing.assert_array_equal(masks[path], mask_lib.keep_mask(jnp.asarray(score), 0.5))
    assert method.report(state.params, state.method_state)["sparsity"] == 0.5
    final, config = method.finalize(state.params, state.method_state, CONFIG)
    assert SCORES not in final and config is CONFIG
    for path, kernel in _kernel_pairs(final).items():
        assert int((np.asarray(kernel) == 0).sum()) == kernel.size // 2, path


def test_names_config_and_validation():
    assert MovementPruning(score_optimizer="sum").name == "prune_movement_hard"
    assert MovementPruning().name == "prune_movement_hard_adam"  # the authors' default
    assert MovementPruning(movement="soft", score_optimizer="adam").name == (
        "prune_movement_soft_adam"
    )
    block = ml_collections.ConfigDict(
        dict(
            kind="movement",
            sparsity=0.9,
            scope="layer",
            select=(r".*/kernel",),
            initial_sparsity=0.0,
            start_fraction=0.1,
            end_fraction=0.7,
            every_steps=10,
            movement="soft",
            threshold=0.2,
            l1=1e-4,
            score_lr=0.01,
            score_optimizer="adam",
        )
    )
    method = pruning_from_config(block, Context(total_steps=100))
    assert isinstance(method, MovementPruning)
    assert (method.movement, method.threshold, method.l1, method.score_optimizer) == (
        "soft",
        0.2,
        1e-4,
        "adam",
    )
    assert method.schedule == SparsitySchedule(0.9, start_step=10, end_step=70, every=10)
    with pytest.raises(ValueError, match="unknown movement pruning kind"):
        MovementPruning(movement="medium")
    with pytest.raises(ValueError, match="score_optimizer"):
        MovementPruning(score_optimizer="sgd")
