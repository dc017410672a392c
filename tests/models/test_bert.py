"""The Flax encoder on tiny random configs: heads, intermediates, interventions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import models
from bertjax.models import layout
from bertjax.models.interventions import (
    STATS,
    Interventions,
    Matmul,
    Replace,
    empty_stats,
    matmul_sites,
    site_of,
    sites_in,
)

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


def test_no_interventions_is_the_plain_model(classifier):
    model, params = classifier
    plain, _ = _apply(model, params)
    empty, _ = _apply(model, params, interventions=Interventions())
    chex.assert_trees_all_equal(plain, empty)


def test_the_key_mask_as_a_product_column_is_the_added_mask(classifier):
    """Inference puts the key mask into q.k as one more column (`bert.masked_scores`);
    it equals adding it, and the padded sequence's outputs equal the plain path's."""
    from bertjax.models.bert import attention_bias, masked_scores
    from bertjax.models.interventions import SEPARATE_PRODUCTS

    rng = np.random.default_rng(1)
    q, k = (jnp.asarray(rng.standard_normal((2, 3, 5, 4)), jnp.float32) for _ in range(2))
    mask = np.ones((2, 5), np.int32)
    mask[1, 2:] = 0
    bias = attention_bias(jnp.asarray(mask))
    plain = jnp.einsum("bntd,bnsd->bnts", q, k) + bias
    got = masked_scores(q, k, bias, jax.lax.dot_general)
    np.testing.assert_allclose(np.asarray(got), np.asarray(plain), rtol=1e-6, atol=1e-6)
    softmax = lambda s: np.asarray(jax.nn.softmax(s, axis=-1))  # noqa: E731
    np.testing.assert_allclose(softmax(got), softmax(plain), atol=1e-7)
    assert np.all(softmax(got)[1, :, :, 2:] == 0)  # padded keys get nothing
    model, params = classifier
    fast, _ = _apply(model, params, deterministic=True)
    separate, _ = _apply(model, params, deterministic=True,
                         interventions=Interventions(matmul=SEPARATE_PRODUCTS))  # fmt: skip
    np.testing.assert_allclose(fast["logits"], separate["logits"], atol=1e-5)


def _max_gap(a, b):
    return float(np.abs(np.asarray(a["last_hidden_state"] - b["last_hidden_state"])).max())


def _zero_head(params, layer, head, dim=4):
    """Params whose head `head` of `layer` has zero value vectors (contributes nothing)."""
    zeroed = jax.tree_util.tree_map(np.array, params)
    value = zeroed["bert"]["encoder"]["layer"][str(layer)]["attention"]["self"]["value"]
    value["kernel"][:, head * dim : (head + 1) * dim] = 0.0
    value["bias"][head * dim : (head + 1) * dim] = 0.0
    return zeroed


def test_head_mask_equals_zeroed_value_projection(classifier):
    model, params = classifier
    head_mask = np.ones((3, 4), np.float32)
    head_mask[1, 2] = 0.0
    masked, inter = _apply(
        model,
        params,
        interventions=Interventions(head_mask=jnp.asarray(head_mask)),
        collect=("attn_probs",),
    )
    # Head 2 of layer 1 (and only that one: each layer reads its own row) contributes
    # nothing, as if its value vectors were zero.
    reference, _ = _apply(model, _zero_head(params, 1, 2))
    chex.assert_trees_all_close(masked, reference, atol=1e-6)
    plain, _ = _apply(model, params)
    assert _max_gap(masked, plain) > 1e-3  # a change the equality above would see
    assert np.all(np.asarray(inter["attn_probs/1"])[:, 2] == 0)
    assert np.all(np.asarray(inter["attn_probs/0"]).sum(-1) > 0.99)
    ones, _ = _apply(model, params, interventions=Interventions(head_mask=jnp.ones((3, 4))))
    chex.assert_trees_all_close(ones, plain, atol=1e-6)


def test_ffn_mask_equals_zeroed_neurons(classifier):
    model, params = classifier
    ffn_mask = np.ones((3, 24), np.float32)
    ffn_mask[0, [1, 5, 7]] = 0.0
    masked, _ = _apply(model, params, interventions=Interventions(ffn_mask=jnp.asarray(ffn_mask)))
    zeroed = jax.tree_util.tree_map(np.array, params)
    dense = zeroed["bert"]["encoder"]["layer"]["0"]["output"]["dense"]
    dense["kernel"][[1, 5, 7], :] = 0.0
    reference, _ = _apply(model, zeroed)
    chex.assert_trees_all_close(masked, reference, atol=1e-6)
    plain, _ = _apply(model, params)
    assert _max_gap(masked, plain) > 1e-3  # a change the equality above would see


def test_layers_intervention_runs_a_subset(classifier):
    model, params = classifier
    outputs, inter = _apply(
        model, params, interventions=Interventions(layers=(0, 2)), collect=("hidden",)
    )
    assert sorted(inter) == ["hidden/0", "hidden/2"]
    # Same as a 2-layer model holding layers 0 and 2.
    small = model.clone(config=CONFIG.with_layers((0, 2)))
    small_params = layout.select_layers(params, (0, 2))
    assert sorted(small_params["bert"]["encoder"]["layer"]) == ["0", "1"]
    reference, _ = _apply(small, small_params)
    chex.assert_trees_all_close(outputs, reference, atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        _apply(model, params, interventions=Interventions(layers=(0, 3)))


def test_masks_are_indexed_by_the_full_models_layer_when_layers_skip(classifier):
    model, params = classifier
    head_mask = np.ones((3, 4), np.float32)
    head_mask[2, 1] = 0.0  # row 2: the third layer of the full model
    outputs, _ = _apply(
        model, params, interventions=Interventions(layers=(0, 2), head_mask=jnp.asarray(head_mask))
    )
    reference, _ = _apply(
        model, _zero_head(params, 2, 1), interventions=Interventions(layers=(0, 2))
    )
    chex.assert_trees_all_close(outputs, reference, atol=1e-6)


def test_at_layer_slices_the_per_layer_fields_only():
    head_mask = jnp.arange(12.0).reshape(3, 4)
    ffn_mask = jnp.arange(3.0 * 24).reshape(3, 24)
    matmul = Matmul()
    replace = Replace(((0, 1), (2,)), jnp.asarray([True, False]))
    full = Interventions(
        head_mask=head_mask, ffn_mask=ffn_mask, layers=(0, 2), replace=replace, matmul=matmul
    )
    for i in range(3):
        layer = full.at_layer(i)
        np.testing.assert_array_equal(layer.head_mask, head_mask[i])
        np.testing.assert_array_equal(layer.ffn_mask, ffn_mask[i])
        assert layer.layers == (0, 2) and layer.matmul is matmul and layer.replace is replace
    only_heads = Interventions(head_mask=head_mask).at_layer(1)
    assert only_heads.ffn_mask is None and only_heads.set_fields() == ("head_mask",)
    assert Interventions().at_layer(5).set_fields() == ()
    # A pytree: the arrays are leaves (traced under jit), layers and matmul are static.
    assert len(jax.tree_util.tree_leaves(full)) == 3
    row = jax.jit(lambda iv: iv.at_layer(2).head_mask)(Interventions(head_mask=head_mask))
    np.testing.assert_array_equal(row, head_mask[2])


def test_two_methods_setting_one_intervention_is_an_error():
    from methods.base import compose
    from methods.pruning.layer_drop import LayerDrop
    from methods.pruning.structured import StructuredPruning

    heads = Interventions(head_mask=jnp.ones((3, 4)))
    merged = heads.merge(Interventions(layers=(1,)))
    assert merged.set_fields() == ("head_mask", "layers")
    with pytest.raises(ValueError, match="'head_mask'"):
        heads.merge(Interventions(head_mask=jnp.zeros((3, 4))))
    _, params = models.build(CONFIG, "classification")
    for pair in (
        [LayerDrop(num_layers=3, drop=1), LayerDrop(num_layers=3, drop=2)],
        [StructuredPruning(num_heads=4), StructuredPruning(num_heads=4, head_sparsity=0.5)],
    ):
        method = compose(pair)
        params_, state = method.init(params, {})
        with pytest.raises(ValueError, match="two methods set the model intervention"):
            method.present(params_, state, 0, True)
    # Different fields compose.
    method = compose([StructuredPruning(num_heads=4), LayerDrop(num_layers=3, drop=1)])
    _, interventions = method.present(*method.init(params, {}), 0, True)
    assert interventions.set_fields() == ("head_mask", "ffn_mask", "layers")


class Counting(Matmul):
    """Records each product's operand shapes and each operand site; `scale` changes them."""

    def __init__(self, scale=1.0, statistic=False):
        self.products, self.sites, self.scale, self.statistic = [], [], scale, statistic

    def operand(self, x, site):
        self.sites.append(site)
        return x, (jnp.min(x), jnp.max(x)) if self.statistic else None

    def dot_general(self, lhs, rhs, dimension_numbers, precision=None, **kwargs):
        self.products.append(lhs.shape)
        return self.scale * jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, **kwargs)


def test_matmul_intervention_reaches_every_matmul_and_site(classifier):
    model, params = classifier
    plain, _ = _apply(model, params)
    counting = Counting()
    same, _ = _apply(model, params, interventions=Interventions(matmul=counting))
    chex.assert_trees_all_close(plain, same, atol=1e-6)
    # Per layer: q, k, v, attention output, FFN in, FFN out, scores, context; + pooler, classifier.
    assert len(counting.products) == 3 * 8 + 2
    # Every site the model lists is visited, once.
    assert sorted(counting.sites) == list(matmul_sites(params))
    assert "bert/encoder/layer/1/attention/self/qk_key" in counting.sites
    assert "bert/encoder/layer/2/intermediate/dense/input" in counting.sites
    changed, _ = _apply(model, params, interventions=Interventions(matmul=Counting(scale=0.5)))
    assert not np.allclose(changed["logits"], plain["logits"])


def test_operand_statistics_are_written_to_their_sites(classifier):
    model, params = classifier
    ids, mask, types = _inputs()
    interventions = Interventions(matmul=Counting(statistic=True))
    (outputs, _), variables = model.apply(
        {"params": params, STATS: empty_stats(matmul_sites(params))},
        ids,
        mask,
        types,
        interventions=interventions,
        mutable=[STATS],
    )
    stats = variables[STATS]
    assert sites_in(stats, "seen") == matmul_sites(params)
    _, inter = _apply(model, params, collect=("ffn_act",))
    ffn_out = site_of(stats, "bert/encoder/layer/0/output/dense/input")
    np.testing.assert_allclose(
        [ffn_out["lo"], ffn_out["hi"]],
        [inter["ffn_act/0"].min(), inter["ffn_act/0"].max()],
        rtol=1e-6,
    )
    assert float(ffn_out["seen"]) == 1.0
    # Without a mutable collection, nothing is recorded and the outputs are the same.
    plain, _ = _apply(model, params, interventions=interventions)
    chex.assert_trees_all_close(plain, outputs, atol=1e-6)


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
