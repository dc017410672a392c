"""TinyBERT and BERT-EMD losses: layer maps, masking, projections, stages, EMD costs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import models
from methods.distill import emd
from methods.distill.bert_emd import EmdDistillation
from methods.distill.layer_maps import layer_map
from methods.distill.tinybert import (
    TinyBertDistillation,
    attention_mse,
    hidden_mse,
    prediction_loss,
    project,
    token_weights,
)

RNGS = {"state": jax.random.key(0), "params": jax.random.key(1)}


def test_layer_maps():
    assert layer_map("uniform", 3, 6) == ((0, 1), (1, 3), (2, 5))
    assert layer_map("top", 3, 6) == ((0, 3), (1, 4), (2, 5))
    assert layer_map("bottom", 2, 6) == ((0, 0), (1, 1))
    assert layer_map("last", 2, 6) == ((1, 5),)
    assert layer_map("explicit", 3, 6, (2, 0, 6)) == ((0, 1), (2, 5))
    with pytest.raises(ValueError, match="cannot map"):
        layer_map("uniform", 4, 2)
    with pytest.raises(ValueError, match="unknown layer map"):
        layer_map("middle", 2, 6)
    with pytest.raises(ValueError, match="outside"):
        layer_map("explicit", 2, 6, (1, 7))


def test_attention_loss_ignores_padding_and_padded_examples():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    mask = np.asarray([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32)
    weights = mask * np.asarray([1.0, 0.0])[:, None]  # example 1 is batch padding
    expected = np.mean(np.square(s[0, :, :3, :3] - t[0, :, :3, :3]))
    np.testing.assert_allclose(attention_mse(s, t, weights), expected, rtol=1e-5)
    # Anything at padded keys/queries or in padded examples changes nothing.
    s2 = s.copy()
    s2[0, :, 3, :] = s2[0, :, :, 3] = 1e4
    s2[1] = -1e4
    np.testing.assert_allclose(attention_mse(s2, t, weights), expected, rtol=1e-5)
    # Different head counts: compared after averaging heads.
    mixed = attention_mse(s[:, :1], t, weights)
    ref = np.mean(np.square(s[0, 0, :3, :3] - t[0].mean(0)[:3, :3]))
    np.testing.assert_allclose(mixed, ref, rtol=1e-5)


def test_hidden_loss_and_projection_params():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 5, 16))
    method = TinyBertDistillation(student_hidden=8, teacher_hidden=16, student_layers=1)
    params, state = method.init({"bert": {"w": 1.0}}, RNGS)
    assert state == {}
    assert params["distill"]["projection"]["kernel"].shape == (8, 16)
    np.testing.assert_array_equal(params["distill"]["projection"]["bias"], np.zeros(16))
    # The model never sees the projection; finalize drops it.
    seen, interventions = method.present(params, state, 0, True)
    assert seen == {"bert": {"w": 1.0}} and interventions.set_fields() == ()
    assert method.finalize(params, state, "cfg") == ({"bert": {"w": 1.0}}, "cfg")
    projected = project(jnp.asarray(s), params)
    np.testing.assert_allclose(
        projected, s @ np.asarray(params["distill"]["projection"]["kernel"]), rtol=1e-5
    )
    weights = np.ones((2, 5), np.float32)
    weights[1, 3:] = 0
    per_token = np.mean(np.square(np.asarray(projected) - t), -1)
    expected = (per_token[0].sum() + per_token[1, :3].sum()) / 8
    np.testing.assert_allclose(hidden_mse(projected, t, weights), expected, rtol=1e-5)
    same = TinyBertDistillation(student_hidden=16, teacher_hidden=16)
    assert same.init({"bert": {}}, RNGS) == ({"bert": {}}, {})


def _views(student_layers, teacher_layers, width=16, seed=0):
    """Real `(outputs, inter)` of two random tiny models on one padded batch."""
    config = models.BertConfig(
        vocab_size=50, hidden_size=width, num_attention_heads=2, intermediate_size=32
    )
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, (3, 6)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, 4:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "weights": np.ones(3, np.float32)}
    views = []
    for layers, s in ((student_layers, 1), (teacher_layers, 2)):
        cfg = models.BertConfig(**{**config.__dict__, "num_hidden_layers": layers})
        model, params = models.build(cfg, "classification", seed=s)
        views.append(
            model.apply(
                {"params": params}, ids, mask, collect=("embeddings", "hidden", "attn_scores")
            )
        )
    return views[0], views[1], batch


def test_tinybert_loss_replaces_the_task_loss_and_follows_stages():
    student, teacher, batch = _views(2, 4)
    method = TinyBertDistillation(
        student_hidden=16, teacher_hidden=16, student_layers=2, teacher_layers=4, split_step=3
    )
    assert method.pairs == ((0, 1), (1, 3)) and method.name == "distill_tinybert_uniform"
    params, state = method.init({}, RNGS)
    loss, metrics = method.loss(jnp.asarray(123.0), student, teacher, batch, params, state, 0)
    w = token_weights(batch)
    hidden = sum(
        hidden_mse(student[1][f"hidden/{j}"], teacher[1][f"hidden/{i}"], w) for j, i in method.pairs
    )
    attention = sum(
        attention_mse(student[1][f"attn_scores/{j}"], teacher[1][f"attn_scores/{i}"], w)
        for j, i in method.pairs
    )
    embedding = hidden_mse(student[1]["embeddings"], teacher[1]["embeddings"], w)
    np.testing.assert_allclose(metrics["hidden_loss"], hidden, rtol=1e-5)
    np.testing.assert_allclose(metrics["attention_loss"], attention, rtol=1e-5)
    np.testing.assert_allclose(metrics["embedding_loss"], embedding, rtol=1e-5)
    # Steps 0..2 (< split_step): the intermediate losses, and nothing of the task loss.
    for step in (0, 2):
        value = method.loss(jnp.asarray(123.0), student, teacher, batch, params, state, step)[0]
        np.testing.assert_allclose(value, embedding + attention + hidden, rtol=1e-5)
    prediction = prediction_loss(
        student[0]["logits"], teacher[0]["logits"], batch["weights"], 1.0, False
    )
    np.testing.assert_allclose(metrics["prediction_loss"], prediction, rtol=1e-6)
    for step in (3, 50):  # the step is an argument: no step in the state
        late = method.loss(jnp.asarray(123.0), student, teacher, batch, params, state, step)[0]
        np.testing.assert_allclose(late, prediction, rtol=1e-6)
    assert state == {}
    # Only the student learns: the teacher's views enter under stop_gradient.
    grad = jax.grad(
        lambda s, t: method.loss(0.0, s, t, batch, params, state, 0)[0], argnums=(0, 1)
    )(student, teacher)
    assert np.abs(np.asarray(grad[0][1]["hidden/1"])).max() > 0
    assert all(not np.any(np.asarray(g)) for g in jax.tree_util.tree_leaves(grad[1]))
    with pytest.raises(ValueError, match="needs a teacher"):
        method.loss(0.0, student, None, batch, params, state, 0)


def test_projection_learns_through_the_hidden_losses():
    student, teacher, batch = _views(2, 4, width=16)
    # A teacher twice as wide (its [B, T, H] states tiled), so that a projection is needed.
    wide = {k: jnp.tile(v, (1, 1, 2)) if v.ndim == 3 else v for k, v in teacher[1].items()}
    wide_teacher = (teacher[0], wide)
    method = TinyBertDistillation(
        student_hidden=16,
        teacher_hidden=32,
        student_layers=2,
        teacher_layers=4,
        stage="intermediate",
    )
    params, state = method.init({}, RNGS)
    grad = jax.grad(lambda p: method.loss(0.0, student, wide_teacher, batch, p, state, 0)[0])(
        params
    )
    assert np.abs(np.asarray(grad["distill"]["projection"]["kernel"])).max() > 0
    _, metrics = method.loss(0.0, student, wide_teacher, batch, params, state, 0)
    w = token_weights(batch)
    expected = sum(
        hidden_mse(project(student[1][f"hidden/{j}"], params), wide_teacher[1][f"hidden/{i}"], w)
        for j, i in method.pairs
    )
    np.testing.assert_allclose(metrics["hidden_loss"], expected, rtol=1e-6)
    embedding = hidden_mse(
        project(student[1]["embeddings"], params), wide_teacher[1]["embeddings"], w
    )
    np.testing.assert_allclose(metrics["embedding_loss"], embedding, rtol=1e-6)


def test_emd_costs_and_loss_reduce_to_a_fixed_map():
    student, teacher, batch = _views(2, 4)
    method = EmdDistillation(
        student_hidden=16,
        teacher_hidden=16,
        student_layers=2,
        teacher_layers=4,
        stage="intermediate",
    )
    params, state = method.init({}, RNGS)
    for kind in ("attention", "hidden"):
        np.testing.assert_allclose(state["weights"][kind]["teacher"], [0.25] * 4)
        np.testing.assert_allclose(state["weights"][kind]["student"], [0.5] * 2)
    costs = method.costs(student, teacher, batch, params)
    assert costs["hidden"].shape == costs["attention"].shape == (4, 2)
    w = token_weights(batch)
    np.testing.assert_allclose(
        costs["hidden"][3, 1],
        hidden_mse(student[1]["hidden/1"], teacher[1]["hidden/3"], w),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        costs["attention"][2, 0],
        attention_mse(student[1]["attn_scores/0"], teacher[1]["attn_scores/2"], w),
        rtol=1e-6,
    )
    loss, metrics = method.loss(jnp.asarray(9.0), student, teacher, batch, params, state, 0)
    flow = np.asarray(metrics["emd/hidden_flow"])
    np.testing.assert_allclose(flow.sum(0), [0.5, 0.5], atol=1e-5)  # uniform masses moved
    np.testing.assert_allclose(flow.sum(1), [0.25] * 4, atol=1e-5)
    np.testing.assert_allclose(
        metrics["hidden_loss"], np.sum(flow * np.asarray(costs["hidden"])), rtol=1e-5
    )
    np.testing.assert_allclose(
        loss,
        metrics["embedding_loss"] + metrics["attention_loss"] + metrics["hidden_loss"],
        rtol=1e-6,
    )  # the task loss (9.0) is replaced
    # The loss is differentiable in the student's states (costs), with the flow held fixed.
    grad = jax.grad(
        lambda h: method.loss(
            0.0, (student[0], {**student[1], "hidden/0": h}), teacher, batch, params, state, 0
        )[0]
    )(student[1]["hidden/0"])
    assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).max() > 0
    # After a step the layer weights move toward cheap transport (the step's flows and costs).
    aux = {"metrics": metrics, "stats": {}}
    assert method.update(state, params, None, aux, 0) is state  # forward-only pass
    frozen = EmdDistillation(student_layers=2, teacher_layers=4, update_weights=False)
    assert frozen.update(state, params, {}, aux, 0) is state
    new = method.update(state, params, {}, aux, 0)
    for kind in ("attention", "hidden"):
        teacher_w, student_w = emd.update_weights(
            metrics[f"emd/{kind}_flow"],
            metrics[f"emd/{kind}_cost"],
            state["weights"][kind]["teacher"],
            state["weights"][kind]["student"],
            None,
        )
        np.testing.assert_allclose(new["weights"][kind]["teacher"], teacher_w, rtol=1e-6)
        np.testing.assert_allclose(new["weights"][kind]["student"], student_w, rtol=1e-6)
    assert not np.allclose(new["weights"]["hidden"]["teacher"], 0.25)
    report = method.report(params, new)
    assert report["emd_hidden_weights"]["teacher"] == [
        round(float(x), 4) for x in new["weights"]["hidden"]["teacher"]
    ]
