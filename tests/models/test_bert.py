"""The Flax encoder on tiny random configs: heads, intermediates, overrides."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import models

CONFIG = models.BertConfig(
    vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=4, intermediate_size=24
)


def _inputs(batch=2, length=7):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, CONFIG.vocab_size, (batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    types = np.zeros_like(ids)
    types[:, 3:] = 1
    return ids, mask, types


def _apply(model, params, **kw):
    return model.apply({"params": params}, *_inputs(), **kw)


@pytest.fixture(scope="module")
def classifier():
    return models.build(CONFIG, "classification", num_labels=3)


@pytest.mark.parametrize(
    ("head", "shape"),
    [(None, None), ("classification", (2, 3)), ("regression", (2, 1)), ("mlm", (2, 7, 50))],
)
def test_heads_output_shapes(head, shape):
    model, params = models.build(CONFIG, head, num_labels=3)
    outputs, inter = _apply(model, params)
    assert outputs["last_hidden_state"].shape == (2, 7, 16)
    assert inter == {}
    if shape is None:
        assert "logits" not in outputs
    else:
        assert outputs["logits"].shape == shape


def test_intermediates_have_stable_names_and_shapes(classifier):
    model, params = classifier
    _, inter = _apply(model, params, collect=models.COLLECTABLE)
    assert inter["embeddings"].shape == (2, 7, 16)
    for i in range(3):
        assert inter[f"hidden/{i}"].shape == (2, 7, 16)
        assert inter[f"attn_probs/{i}"].shape == (2, 4, 7, 7)
        assert inter[f"attn_scores/{i}"].shape == (2, 4, 7, 7)
        assert inter[f"ffn_act/{i}"].shape == (2, 7, 24)
    # Padded keys get no attention; every row is a distribution.
    probs = np.asarray(inter["attn_probs/0"])
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    assert np.all(probs[1, :, :, 4:] == 0)
    with pytest.raises(ValueError, match="unknown intermediates"):
        _apply(model, params, collect=("hiddens",))


def test_head_mask_equals_zeroed_value_projection(classifier):
    model, params = classifier
    head_mask = np.ones((3, 4), np.float32)
    head_mask[1, 2] = 0.0
    masked, _ = _apply(model, params, head_mask=jnp.asarray(head_mask))
    # Head 2 of layer 1 contributes nothing if its value vectors are zero.
    zeroed = jax.tree_util.tree_map(np.array, params)
    value = zeroed["bert"]["encoder"]["layer"]["1"]["attention"]["self"]["value"]
    value["kernel"][:, 8:12] = 0.0
    value["bias"][8:12] = 0.0
    reference, _ = _apply(model, zeroed)
    chex.assert_trees_all_close(masked, reference, atol=1e-6)
    ones, _ = _apply(model, params, head_mask=jnp.ones((3, 4)))
    plain, _ = _apply(model, params)
    chex.assert_trees_all_close(ones, plain, atol=1e-6)


def test_ffn_mask_equals_zeroed_neurons(classifier):
    model, params = classifier
    ffn_mask = np.ones((3, 24), np.float32)
    ffn_mask[0, [1, 5, 7]] = 0.0
    masked, _ = _apply(model, params, ffn_mask=jnp.asarray(ffn_mask))
    zeroed = jax.tree_util.tree_map(np.array, params)
    dense = zeroed["bert"]["encoder"]["layer"]["0"]["output"]["dense"]
    dense["kernel"][[1, 5, 7], :] = 0.0
    reference, _ = _apply(model, zeroed)
    chex.assert_trees_all_close(masked, reference, atol=1e-6)


def test_layers_override_runs_a_subset(classifier):
    model, params = classifier
    outputs, inter = _apply(model, params, layers=(0, 2), collect=("hidden",))
    assert sorted(inter) == ["hidden/0", "hidden/2"]
    # Same as a 2-layer model holding layers 0 and 2.
    small_config = models.BertConfig(**{**CONFIG.__dict__, "num_hidden_layers": 2})
    small, _ = models.build(small_config, "classification", num_labels=3)
    layer = params["bert"]["encoder"]["layer"]
    small_params = jax.tree_util.tree_map(lambda x: x, params)
    small_params["bert"]["encoder"]["layer"] = {"0": layer["0"], "1": layer["2"]}
    reference, _ = _apply(small, small_params)
    chex.assert_trees_all_close(outputs, reference, atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        _apply(model, params, layers=(0, 3))


def test_dot_general_reaches_every_matmul(classifier):
    model, params = classifier
    calls = []

    def counting(lhs, rhs, dimension_numbers, *args, **kwargs):
        calls.append(lhs.shape)
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, *args, **kwargs)

    plain, _ = _apply(model, params)
    same, _ = _apply(model, params, dot_general=counting)
    chex.assert_trees_all_close(plain, same, atol=1e-6)
    # Per layer: q, k, v, attention output, FFN in, FFN out, scores, context; + pooler, classifier.
    assert len(calls) == 3 * 8 + 2

    def halved(*args, **kwargs):
        return 0.5 * jax.lax.dot_general(*args, **kwargs)

    changed, _ = _apply(model, params, dot_general=halved)
    assert not np.allclose(changed["logits"], plain["logits"])


def test_dropout_only_when_not_deterministic(classifier):
    model, params = classifier
    a, _ = _apply(model, params)
    b, _ = _apply(model, params, deterministic=True)
    chex.assert_trees_all_equal(a, b)
    c, _ = _apply(model, params, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(a["logits"], c["logits"])


def test_bfloat16_compute():
    model, params = models.build(CONFIG, "classification", dtype=jnp.bfloat16)
    outputs, _ = _apply(model, params)
    assert outputs["logits"].dtype == jnp.bfloat16
    assert jax.tree_util.tree_leaves(params)[0].dtype == jnp.float32


def test_unknown_head_and_bad_config():
    with pytest.raises(ValueError, match="unknown head"):
        models.build(CONFIG, "span")
    with pytest.raises(ValueError, match="multiple"):
        models.BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="unknown model size"):
        models.variant_config("huge")
