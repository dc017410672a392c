"""Movement pruning: scores are accumulated -grad * w; masks by top-k or threshold."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from methods.pruning import MovementPruning, SparsitySchedule

PARAMS = {
    "bert": {
        "encoder": {
            "layer": {
                "0": {
                    "output": {
                        "dense": {
                            "kernel": jnp.asarray(
                                np.random.default_rng(0).normal(size=(6, 5)), jnp.float32
                            ),
                            "bias": jnp.zeros(5),
                        }
                    }
                }
            }
        }
    }
}


def _leaf(tree):
    return tree["bert"]["encoder"]["layer"]["0"]["output"]["dense"]["kernel"]


def test_scores_accumulate_minus_grad_times_weight_and_mask_is_topk():
    method = MovementPruning(SparsitySchedule(0.4, start_step=1, end_step=3, every=1), score_lr=0.5)
    state = method.init(PARAMS, None)
    rng = np.random.default_rng(1)
    expected = np.zeros((6, 5))
    for step in (1, 2, 3):
        grads = jax.tree_util.tree_map(
            lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), PARAMS
        )
        expected -= 0.5 * np.asarray(_leaf(grads)) * np.asarray(_leaf(PARAMS))
        state = method.update(PARAMS, grads, state, step)
    np.testing.assert_allclose(_leaf(state["scores"]), expected, rtol=1e-5, atol=1e-6)
    mask = np.asarray(_leaf(state["masks"]))
    assert int((mask == 0).sum()) == 12  # floor(0.4 * 30)
    assert expected[mask == 0].max() <= expected[mask == 1].min()
    assert method.report(PARAMS, state)["sparsity"] == pytest.approx(0.4)


def test_mask_is_straight_through_so_pruned_weights_get_gradient():
    method = MovementPruning(SparsitySchedule(0.5))
    state = method.init(PARAMS, None)
    state["masks"]["bert"]["encoder"]["layer"]["0"]["output"]["dense"]["kernel"] = (
        jnp.zeros((6, 5)).at[0].set(1.0)
    )

    def loss(params):
        return jnp.sum(_leaf(method.forward_params(params, state)) ** 2)

    seen = _leaf(method.forward_params(PARAMS, state))
    assert np.all(np.asarray(seen)[1:] == 0)
    grad = _leaf(jax.grad(loss)(PARAMS))
    np.testing.assert_allclose(grad, 2 * np.asarray(seen))  # identity through the mask


def test_soft_movement_thresholds_scores():
    method = MovementPruning(kind="soft", threshold=0.0, l1=1e-8)
    state = method.init(PARAMS, None)
    grads = jax.tree_util.tree_map(lambda p: -p, PARAMS)  # every weight moves away from 0
    grads["bert"]["encoder"]["layer"]["0"]["output"]["dense"]["kernel"] = (
        _leaf(grads).at[0].set(_leaf(PARAMS)[0])
    )  # row 0 moves towards 0
    state = method.update(PARAMS, grads, state, 1)
    mask = np.asarray(_leaf(state["masks"]))
    assert np.all(mask[0] == 0) and np.all(mask[1:] == 1)
    # With no gradient signal the L1 term alone pushes every score below the threshold.
    strong = MovementPruning(kind="soft", threshold=0.0, l1=1.0)
    zero_grads = jax.tree_util.tree_map(jnp.zeros_like, PARAMS)
    pushed = strong.update(PARAMS, zero_grads, strong.init(PARAMS, None), 1)
    np.testing.assert_allclose(_leaf(pushed["scores"]), -0.25)
    assert np.all(np.asarray(_leaf(pushed["masks"])) == 0)
    with pytest.raises(ValueError, match="unknown movement"):
        MovementPruning(kind="medium")


def test_adam_scores_move_by_the_step_size_whatever_the_weight_scale():
    """The authors' code trains scores with Adam: the first step moves every score by
    score_lr towards -sign(grad * w), and rescaling the weights changes nothing."""
    method = MovementPruning(SparsitySchedule(0.4, every=1), score_lr=0.01, score_optimizer="adam")
    rng = np.random.default_rng(2)
    grads = jax.tree_util.tree_map(
        lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), PARAMS
    )
    state = method.update(PARAMS, grads, method.init(PARAMS, None), 1)
    expected = -0.01 * np.sign(np.asarray(_leaf(grads)) * np.asarray(_leaf(PARAMS)))
    np.testing.assert_allclose(_leaf(state["scores"]), expected, rtol=1e-4)
    scaled = jax.tree_util.tree_map(lambda p: 1000.0 * p, PARAMS)
    for step in (2, 3):
        state = method.update(PARAMS, grads, state, step)
    scaled_state = method.init(scaled, None)
    for step in (1, 2, 3):
        scaled_state = method.update(scaled, grads, scaled_state, step)
    np.testing.assert_allclose(_leaf(scaled_state["scores"]), _leaf(state["scores"]), rtol=1e-4)
    np.testing.assert_allclose(_leaf(state["scores"]), 3 * expected, rtol=1e-4)
    with pytest.raises(ValueError, match="score_optimizer"):
        MovementPruning(score_optimizer="sgd")
