"""Logit KD: loss against a reference, no gradient into the teacher, a run without a teacher
refused."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from scipy.special import log_softmax, softmax

from bertjax import models
from bertjax.train import loop, steps
from bertjax.train.optimizer import make_optimizer
from bertjax.train.state import TrainState
from configs import distill_kd
from methods.base import Method
from methods.distill import LogitDistillation, soft_cross_entropy


def _views(student, teacher):
    return ({"logits": jnp.asarray(student)}, {}), ({"logits": jnp.asarray(teacher)}, {})


def test_soft_ce_matches_reference_mixes_the_task_loss_and_ignores_padding():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    weights = np.asarray([1, 1, 1, 0, 0], np.float32)
    method = LogitDistillation(temperature=3.0, alpha=0.7)
    assert method.name == "distill_kd_soft_ce"
    batch = {"weights": jnp.asarray(weights)}
    loss, metrics = method.loss(jnp.asarray(2.0), *_views(s, t), batch, {}, {}, 0)
    per = -np.sum(softmax(t / 3, -1) * log_softmax(s / 3, -1), -1) * 9
    np.testing.assert_allclose(metrics["kd_loss"], per[:3].mean(), rtol=1e-5)
    np.testing.assert_allclose(loss, 0.3 * 2.0 + 0.7 * per[:3].mean(), rtol=1e-5)
    # Rows of weight 0 change nothing.
    s2 = s.copy()
    s2[3:] = 1e3
    np.testing.assert_allclose(
        method.loss(jnp.asarray(2.0), *_views(s2, t), batch, {}, {}, 0)[0], loss, rtol=1e-6
    )


def test_mse_and_regression_variants():
    s, t = np.asarray([[1.0], [2.0]]), np.asarray([[0.0], [4.0]])
    batch = {"weights": jnp.ones(2)}
    for method in (
        LogitDistillation(kind="mse", alpha=1.0),
        LogitDistillation(regression=True, alpha=1.0),
    ):
        np.testing.assert_allclose(method.loss(5.0, *_views(s, t), batch, {}, {}, 0)[0], 2.5)
    half = LogitDistillation(kind="mse", alpha=0.5)
    np.testing.assert_allclose(half.loss(1.0, *_views(s, t), batch, {}, {}, 0)[0], 1.75)
    with pytest.raises(ValueError, match="needs a teacher"):
        LogitDistillation().loss(0.0, ({"logits": jnp.zeros((1, 2))}, {}), None, batch, {}, {}, 0)
    with pytest.raises(ValueError, match="alpha"):
        LogitDistillation(alpha=1.5)


def test_kd_loss_takes_no_gradient_into_the_teacher_logits():
    rng = np.random.default_rng(1)
    s, t = (jnp.asarray(rng.normal(size=(4, 3)), jnp.float32) for _ in range(2))
    batch = {"weights": jnp.ones(4)}
    for method in (LogitDistillation(alpha=0.5), LogitDistillation(kind="mse")):

        def kd(student, teacher, method=method):
            return method.loss(0.0, *_views(student, teacher), batch, {}, {}, 0)[0]

        grad_s, grad_t = jax.grad(kd, argnums=(0, 1))(s, t)
        assert np.abs(np.asarray(grad_s)).max() > 0
        assert not np.any(np.asarray(grad_t))
    # The same cross-entropy without the stop_gradient does reach the teacher's logits.
    grad = jax.grad(lambda teacher: soft_cross_entropy(s, teacher, 2.0).sum())(t)
    assert np.abs(np.asarray(grad)).max() > 0


CONFIG = models.BertConfig(
    vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
)


def _batch():
    ids = np.random.default_rng(0).integers(1, 64, (8, 6)).astype(np.int32)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
        "labels": np.zeros(8, np.int32),
        "weights": np.ones(8, np.float32),
    }


@dataclasses.dataclass(frozen=True)
class RawTeacherLoss(Method):
    """A loss that uses the teacher's logits and hidden states with no stop_gradient of its
    own: only the train step's can keep the gradient out of the teacher."""

    @property
    def intermediates(self):
        return ("hidden",)

    def loss(self, task_loss, student, teacher, batch, params, state, step):
        reach = jnp.sum(teacher[0]["logits"] ** 2) + jnp.sum(teacher[1]["hidden/1"] ** 2)
        return task_loss + jnp.sum(student[0]["logits"] * teacher[0]["logits"]) + reach, {}


@pytest.mark.slow  # 17 s (a gradient of the train step); the next test checks the teacher stays put
def test_teacher_params_receive_no_gradient_through_the_train_step():
    teacher, teacher_params = models.build(CONFIG, "classification", seed=1)
    student, params = models.build(CONFIG, "classification", seed=2)
    method = RawTeacherLoss()
    state = TrainState.create(params, optax.sgd(0.1), 0)
    batch = _batch()
    train_step = steps.train_step_fn(student, regression=False, method=method, teacher=teacher)

    def step_loss(tp, p):
        return train_step(state.replace(params=p), batch, tp)[1]["loss"]

    to_teacher, to_student = jax.jit(jax.grad(step_loss, argnums=(0, 1)))(teacher_params, params)
    leaves = jax.tree_util.tree_leaves(to_teacher)
    assert len(leaves) == len(jax.tree_util.tree_leaves(teacher_params))
    assert all(not np.any(np.asarray(g)) for g in leaves)  # exactly zero, every leaf
    assert max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(to_student)) > 0

    # Without the step's stop_gradient the same loss does reach the teacher's params.
    def direct(tp):
        inputs = [batch[k] for k in steps.MODEL_INPUTS]
        view = teacher.apply({"params": tp}, *inputs, collect=method.intermediates)
        student_view = student.apply({"params": params}, *inputs)
        return method.loss(0.0, student_view, view, batch, params, {}, 0)[0]

    reached = jax.tree_util.tree_leaves(jax.grad(direct)(teacher_params))
    assert max(float(jnp.abs(g).max()) for g in reached) > 0


def test_only_the_student_learns_from_the_teacher():
    teacher, teacher_params = models.build(CONFIG, "classification", seed=1)
    # A confident teacher, so that there is something to learn.
    teacher_params["classifier"]["kernel"] = teacher_params["classifier"]["kernel"] * 100.0
    student, params = models.build(CONFIG, "classification", seed=2)
    train = ml_collections.ConfigDict(
        dict(learning_rate=1e-2, warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0)
    )
    state = TrainState.create(params, make_optimizer(train, 10), 0)
    method = LogitDistillation(alpha=1.0)
    step = jax.jit(steps.train_step_fn(student, regression=False, method=method, teacher=teacher))
    batch = _batch()
    losses = []
    for _ in range(5):
        state, values = step(state, batch, teacher_params)
        losses.append(float(values["kd_loss"]))
        np.testing.assert_allclose(values["loss"], values["kd_loss"], rtol=1e-6)  # alpha = 1
    assert losses[-1] < losses[0]


def test_distillation_without_a_teacher_is_refused(tmp_path, shrink):
    # KD runs end to end (a teacher trained first) in test_distill_runs.py.
    no_teacher = shrink(distill_kd.get_config("student=tiny,task=sst2,smoke=True"))
    with pytest.raises(ValueError, match="needs config.teacher"):
        loop.train_and_evaluate(no_teacher, tmp_path / "nothing")
