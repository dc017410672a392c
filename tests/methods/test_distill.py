"""Logit KD: loss against a reference, teacher untouched, a run without a teacher refused."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from bertjax import models
from bertjax.train import loop, steps
from bertjax.train.optimizer import make_optimizer
from bertjax.train.state import TrainState
from configs import distill_kd
from methods.distill import LogitDistillation


def _views(student, teacher):
    return ({"logits": jnp.asarray(student)}, {}), ({"logits": jnp.asarray(teacher)}, {})


def test_soft_ce_matches_reference_and_ignores_padding():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    weights = np.asarray([1, 1, 1, 0, 0], np.float32)
    method = LogitDistillation(temperature=3.0, alpha=0.7)
    loss, metrics = method.loss(*_views(s, t), {"weights": jnp.asarray(weights)}, None)
    per = -np.sum(softmax(t / 3, -1) * log_softmax(s / 3, -1), -1) * 9
    np.testing.assert_allclose(metrics["kd_loss"], per[:3].mean(), rtol=1e-5)
    np.testing.assert_allclose(loss, 0.7 * per[:3].mean(), rtol=1e-5)
    assert method.hard_loss_weight() == pytest.approx(0.3)


def test_mse_and_regression_variants():
    s, t = np.asarray([[1.0], [2.0]]), np.asarray([[0.0], [4.0]])
    batch = {"weights": jnp.ones(2)}
    for method in (
        LogitDistillation(kind="mse", alpha=1.0),
        LogitDistillation(regression=True, alpha=1.0),
    ):
        np.testing.assert_allclose(method.loss(*_views(s, t), batch, None)[0], 2.5)
    with pytest.raises(ValueError, match="needs a teacher"):
        LogitDistillation().loss(({"logits": jnp.zeros((1, 2))}, {}), None, batch, None)


def test_teacher_params_get_no_update_and_only_student_learns():
    config = models.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
    )
    teacher, teacher_params = models.build(config, "classification", seed=1)
    # A confident teacher, so that there is something to learn.
    teacher_params["classifier"]["kernel"] = teacher_params["classifier"]["kernel"] * 100.0
    student, params = models.build(config, "classification", seed=2)
    train = ml_collections.ConfigDict(
        dict(learning_rate=1e-2, warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0)
    )
    state = TrainState.create(params, make_optimizer(train, 10), 0)
    method = LogitDistillation(alpha=1.0)
    step = jax.jit(steps.train_step_fn(student, regression=False, method=method, teacher=teacher))
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 64, (8, 6)).astype(np.int32)
    batch = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
        "labels": np.zeros(8, np.int32),
        "weights": np.ones(8, np.float32),
    }
    before = jax.tree_util.tree_map(np.array, teacher_params)
    losses = []
    for _ in range(5):
        state, values = step(state, batch, teacher_params)
        losses.append(float(values["kd_loss"]))
    chex.assert_trees_all_equal(before, jax.device_get(teacher_params))
    assert losses[-1] < losses[0]
    # The teacher's params are an input, not differentiated: d(step)/d(teacher) is not taken,
    # and stop_gradient makes a gradient through them zero.
    grad = jax.grad(lambda tp: step(state, batch, tp)[1]["kd_loss"])(teacher_params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(grad))


def test_distillation_without_a_teacher_is_refused(tmp_path, shrink):
    # KD runs end to end (a teacher trained first) in test_distill_runs.py.
    no_teacher = shrink(distill_kd.get_config("student=tiny,task=sst2,smoke=True"))
    with pytest.raises(ValueError, match="needs config.teacher"):
        loop.train_and_evaluate(no_teacher, tmp_path / "nothing")
