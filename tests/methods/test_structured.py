"""Structured pruning and layer dropping: importance, budgets, and physical removal."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import models
from methods.base import compose
from methods.pruning.layer_drop import LayerDrop, contribution_ranking, dropped_layers
from methods.pruning.structured import StructuredPruning

CONFIG = models.BertConfig(
    vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48
)


def _batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 64, (3, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    return ids, mask, np.zeros_like(ids)


def _outputs(model, params, **overrides):
    out, _ = model.apply({"params": params}, *_batch(), **overrides)
    return np.asarray(out["logits"])


@pytest.fixture(scope="module")
def model_and_params():
    return models.build(CONFIG, "classification", num_labels=3)


def test_gradient_importance_equals_mask_gradient(model_and_params):
    model, params = model_and_params
    method = StructuredPruning(num_heads=4, head_sparsity=0.5, ffn_sparsity=0.5)
    ids, mask, types = _batch()

    def loss_of(p, head_mask, ffn_mask):
        out, _ = model.apply(
            {"params": p}, ids, mask, types, head_mask=head_mask, ffn_mask=ffn_mask
        )
        return jnp.sum(out["logits"] ** 2)

    ones_h, ones_f = jnp.ones((3, 4)), jnp.ones((3, 48))
    grads = jax.grad(loss_of)(params, ones_h, ones_f)
    head_ref, ffn_ref = jax.grad(loss_of, argnums=(1, 2))(params, ones_h, ones_f)
    heads, neurons = method._gradient_scores(params, grads)
    np.testing.assert_allclose(heads, np.abs(head_ref), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(neurons, np.abs(ffn_ref), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_budgets(model_and_params, scope):
    _, params = model_and_params
    method = StructuredPruning(
        num_heads=4,
        head_sparsity=0.5,
        ffn_sparsity=0.25,
        importance="weight_norm",
        scope=scope,
        prune_step=0,
    )
    state = method.init(params, None)
    heads, ffn = np.asarray(state["head_mask"]), np.asarray(state["ffn_mask"])
    assert heads.sum() == 6 and ffn.sum() == 3 * 48 - int(0.25 * 144)
    assert np.all(heads.sum(1) >= 1)
    if scope == "layer":
        assert np.all(heads.sum(1) == 2) and np.all(ffn.sum(1) == 36)


def test_gradient_masks_fix_at_prune_step(model_and_params):
    _, params = model_and_params
    method = StructuredPruning(num_heads=4, head_sparsity=0.25, prune_step=2)
    state = method.init(params, None)
    grads = jax.tree_util.tree_map(lambda p: jnp.ones_like(p) * 0.01, params)
    state = method.update(params, grads, state, 1)
    assert np.all(np.asarray(state["head_mask"]) == 1)
    state = method.update(params, grads, state, 2)
    assert np.asarray(state["head_mask"]).sum() == 9
    later = method.update(params, jax.tree_util.tree_map(jnp.zeros_like, params), state, 3)
    chex.assert_trees_all_equal(later["head_mask"], state["head_mask"])
    chex.assert_trees_all_equal(later["head_scores"], state["head_scores"])


def _pruned(params, scope="global", drop=()):
    parts = [
        StructuredPruning(
            num_heads=4,
            head_sparsity=0.5,
            ffn_sparsity=0.3,
            importance="weight_norm",
            scope=scope,
            prune_step=0,
        )
    ]
    if drop:
        parts.append(LayerDrop(num_layers=3, strategy="explicit", layers_to_drop=drop))
    method = compose(parts)
    return method, method.init(params, None)


@pytest.mark.parametrize(("scope", "drop"), [("layer", ()), ("global", ()), ("global", (1,))])
def test_finalize_equals_masked_model_and_exports(tmp_path, model_and_params, scope, drop):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    model, params = model_and_params
    method, state = _pruned(params, scope, drop)
    masked = _outputs(model, method.forward_params(params, state), **method.overrides(state))
    small_params, small_config = method.finalize(jax.device_get(params), state, CONFIG)
    small = model.clone(config=small_config)
    assert small_config.num_hidden_layers == 3 - len(drop)
    np.testing.assert_allclose(_outputs(small, small_params), masked, atol=1e-5)
    before = sum(x.size for x in jax.tree_util.tree_leaves(params))
    after = sum(x.size for x in jax.tree_util.tree_leaves(small_params))
    assert after < before

    models.save_pretrained(small, small_params, tmp_path)
    loaded_model, loaded = models.load_pretrained(tmp_path, head="classification")
    assert loaded_model.config == small_config
    np.testing.assert_allclose(_outputs(loaded_model, loaded), masked, atol=1e-5)
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask, types = (torch.tensor(x, dtype=torch.long) for x in _batch())
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy()
    np.testing.assert_allclose(theirs, masked, atol=1e-5)
    if scope == "global":
        saved = json.loads((tmp_path / "config.json").read_text())
        assert "bertjax_pruned_heads" in saved


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [("top", (4, 5)), ("bottom", (0, 1)), ("even", (3, 5)), ("odd", (2, 4)), ("symmetric", (2, 3))],
)
def test_drop_strategies(strategy, expected):
    assert dropped_layers(strategy, 6, 2) == expected
    assert LayerDrop(num_layers=6, drop=2, strategy=strategy).kept == tuple(
        i for i in range(6) if i not in expected
    )
    with pytest.raises(ValueError):
        dropped_layers(strategy, 6, 6)


def test_contribution_ranking_puts_identity_layers_first():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 8)), jnp.float32)
    inter = {"embeddings": x, "hidden/0": -x, "hidden/1": -x + 1e-3, "hidden/2": 2 * x}
    ranking = contribution_ranking(inter, jnp.ones((2, 5)), 3)
    assert list(ranking) == [1, 2, 0]


def test_layer_drop_runs_only_kept_layers(model_and_params):
    model, params = model_and_params
    method = LayerDrop(num_layers=3, drop=1, strategy="top")
    out, inter = model.apply(
        {"params": params}, *_batch(), collect=("hidden",), **method.overrides(None)
    )
    assert sorted(inter) == ["hidden/0", "hidden/1"]
