"""TinyBERT and BERT-EMD losses: layer maps, masking, projections, stages, EMD costs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import models
from methods.distill.bert_emd import EmdDistillation
from methods.distill.layer_maps import layer_map
from methods.distill.tinybert import (
    TinyBertDistillation,
    attention_mse,
    hidden_mse,
    project,
)


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


def test_hidden_loss_and_projection_shapes():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 5, 16))
    method = TinyBertDistillation(student_hidden=8, teacher_hidden=16, student_layers=1)
    params = method.init_params({"bert": {}}, jax.random.key(0))
    assert params["distill"]["projection"]["kernel"].shape == (8, 16)
    assert params["distill"]["projection"]["bias"].shape == (16,)
    assert "distill" not in method.forward_params(params, None)
    assert "distill" not in method.finalize(params, None, None)[0]
    projected = project(jnp.asarray(s), params)
    assert projected.shape == (2, 5, 16)
    weights = np.ones((2, 5), np.float32)
    weights[1, 3:] = 0
    per_token = np.mean(np.square(np.asarray(projected) - t), -1)
    expected = (per_token[0].sum() + per_token[1, :3].sum()) / 8
    np.testing.assert_allclose(hidden_mse(projected, t, weights), expected, rtol=1e-5)
    same = TinyBertDistillation(student_hidden=16, teacher_hidden=16)
    assert same.init_params({"bert": {}}, jax.random.key(0)) == {"bert": {}}


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


def test_tinybert_loss_sums_mapped_layers_and_follows_stages():
    student, teacher, batch = _views(2, 4)
    method = TinyBertDistillation(
        student_hidden=16, teacher_hidden=16, student_layers=2, teacher_layers=4, split_step=3
    )
    state = method.init(None, None)
    loss, metrics = method.loss(student, teacher, batch, state)
    from methods.distill.tinybert import token_weights

    w = token_weights(batch)
    hidden = sum(
        hidden_mse(student[1][f"hidden/{j}"], teacher[1][f"hidden/{i}"], w) for j, i in method.pairs
    )
    np.testing.assert_allclose(metrics["hidden_loss"], hidden, rtol=1e-5)
    intermediate = metrics["embedding_loss"] + metrics["attention_loss"] + hidden
    np.testing.assert_allclose(loss, intermediate, rtol=1e-5)  # step 0 < split: intermediate
    late = method.update(None, None, state, 3)
    np.testing.assert_allclose(
        method.loss(student, teacher, batch, late)[0], metrics["prediction_loss"]
    )
    assert method.hard_loss_weight() == 0.0


def test_emd_costs_and_loss_reduce_to_a_fixed_map():
    student, teacher, batch = _views(2, 4)
    method = EmdDistillation(
        student_hidden=16,
        teacher_hidden=16,
        student_layers=2,
        teacher_layers=4,
        stage="intermediate",
    )
    state = method.init(None, None)
    costs = method.costs(student, teacher, batch, None)
    assert costs["hidden"].shape == costs["attention"].shape == (4, 2)
    from methods.distill.tinybert import token_weights

    w = token_weights(batch)
    np.testing.assert_allclose(
        costs["hidden"][3, 1],
        hidden_mse(student[1]["hidden/1"], teacher[1]["hidden/3"], w),
        rtol=1e-6,
    )
    loss, metrics = method.loss(student, teacher, batch, state)
    flow = np.asarray(metrics["emd/hidden_flow"])
    np.testing.assert_allclose(flow.sum(0), [0.5, 0.5], atol=1e-5)  # uniform masses moved
    np.testing.assert_allclose(flow.sum(1), [0.25] * 4, atol=1e-5)
    np.testing.assert_allclose(
        metrics["hidden_loss"], np.sum(flow * np.asarray(costs["hidden"])), rtol=1e-5
    )
    # The loss is differentiable in the student's states (costs), with the flow held fixed.
    grad = jax.grad(
        lambda h: method.loss((student[0], {**student[1], "hidden/0": h}), teacher, batch, state)[0]
    )(student[1]["hidden/0"])
    assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).max() > 0
    new = method.observe_loss(state, metrics)
    for kind in ("attention", "hidden"):
        for side, n in (("teacher", 4), ("student", 2)):
            weights = np.asarray(new["weights"][kind][side])
            assert weights.shape == (n,) and weights.sum() == pytest.approx(1.0, abs=1e-5)
    assert not np.allclose(new["weights"]["hidden"]["teacher"], 0.25)
