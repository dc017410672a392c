"""Structured pruning and layer dropping: importance, budgets, and physical removal."""

import json

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bertjax import models
from bertjax.models.interventions import Interventions
from bertjax.train import steps
from methods.base import Context, compose
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


RNGS = {"state": jax.random.key(0), "params": jax.random.key(1)}
AUX = {"metrics": {}, "stats": {}}


def _outputs(model, params, **kw):
    out, _ = model.apply({"params": params}, *_batch(), **kw)
    return np.asarray(out["logits"])


def _presented(model, method, params, state):
    """Logits of the model as `method` presents it in evaluation (steps.forward)."""
    ids, mask, types = _batch()
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    out, _, _ = steps.forward(model, method, params, state, 0, batch, train=False)
    return np.asarray(out["logits"])


@pytest.fixture(scope="module")
def model_and_params():
    return models.build(CONFIG, "classification", num_labels=3)


def test_gradient_importance_equals_mask_gradient(model_and_params):
    model, params = model_and_params
    method = StructuredPruning(num_heads=4, head_sparsity=0.5, ffn_sparsity=0.5)
    ids, mask, types = _batch()

    def loss_of(p, head_mask, ffn_mask):
        interventions = Interventions(head_mask=head_mask, ffn_mask=ffn_mask)
        out, _ = model.apply({"params": p}, ids, mask, types, interventions=interventions)
        return jnp.sum(out["logits"] ** 2)

    ones_h, ones_f = jnp.ones((3, 4)), jnp.ones((3, 48))
    grads, head_ref, ffn_ref = jax.jit(jax.grad(loss_of, argnums=(0, 1, 2)))(params, ones_h, ones_f)
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
    same, state = method.init(params, RNGS)
    assert same is params
    heads, ffn = np.asarray(state["head_mask"]), np.asarray(state["ffn_mask"])
    assert heads.sum() == 6 and ffn.sum() == 3 * 48 - int(0.25 * 144)
    assert np.all(heads.sum(1) >= 1)
    head_scores, ffn_scores = (np.asarray(x) for x in method._weight_norm_scores(params))
    if scope == "layer":
        assert np.all(heads.sum(1) == 2) and np.all(ffn.sum(1) == 36)
        for i in range(3):  # the lowest norms of each layer go
            assert head_scores[i][heads[i] == 0].max() <= head_scores[i][heads[i] == 1].min()
            assert ffn_scores[i][ffn[i] == 0].max() <= ffn_scores[i][ffn[i] == 1].min()
    else:  # the lowest of the per-layer normalised norms go, over all layers
        normed = ffn_scores / np.linalg.norm(ffn_scores, axis=1, keepdims=True)
        assert normed[ffn == 0].max() <= normed[ffn == 1].min()


def test_gradient_masks_fix_at_prune_step(model_and_params):
    _, params = model_and_params
    method = StructuredPruning(num_heads=4, head_sparsity=0.25, prune_step=2)
    _, state = method.init(params, RNGS)
    grads = jax.tree_util.tree_map(
        lambda p: jnp.asarray(np.random.default_rng(p.size).normal(size=p.shape), p.dtype), params
    )
    once, _ = method._gradient_scores(params, grads)
    # A forward-only (calibration) pass changes nothing.
    assert method.update(state, params, None, AUX, 0) is state
    # Step 0: the first update; importance accumulates, masks wait for prune_step updates.
    state = method.update(state, params, grads, AUX, 0)
    assert np.all(np.asarray(state["head_mask"]) == 1)
    np.testing.assert_allclose(state["head_scores"], once, rtol=1e-6)
    # Step 1: the second update: scores of both steps, then 1 of 4 heads per layer goes.
    state = method.update(state, params, grads, AUX, 1)
    scores, mask = np.asarray(state["head_scores"]), np.asarray(state["head_mask"])
    np.testing.assert_allclose(scores, 2 * np.asarray(once), rtol=1e-6)
    assert mask.sum() == 9 and np.all(mask.sum(1) == 3)
    np.testing.assert_array_equal(mask == 0, scores == scores.min(1, keepdims=True))
    later = method.update(state, params, jax.tree_util.tree_map(jnp.zeros_like, params), AUX, 2)
    chex.assert_trees_all_equal(later["head_mask"], state["head_mask"])
    chex.assert_trees_all_equal(later["head_scores"], state["head_scores"])


def test_from_config_needs_one_update_for_gradient_importance():
    block = ml_collections.ConfigDict(
        dict(
            head_sparsity=0.5,
            ffn_sparsity=0.25,
            importance="gradient",
            scope="global",
            prune_fraction=0.0,
        )
    )
    context = Context(total_steps=40, model=CONFIG)
    method = StructuredPruning.from_config(block, context)
    assert (method.num_heads, method.prune_step, method.scope) == (4, 1, "global")
    assert method.name == "prune_structured"
    block.prune_fraction = 0.25
    assert StructuredPruning.from_config(block, context).prune_step == 10
    block.prune_fraction, block.importance = 0.0, "weight_norm"
    assert StructuredPruning.from_config(block, context).prune_step == 0
    with pytest.raises(ValueError, match="prune_step >= 1"):
        StructuredPruning(num_heads=4, prune_step=0)


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
    return method, method.init(params, RNGS)[1]


@pytest.mark.parametrize(("scope", "drop"), [("layer", ()), ("global", ()), ("global", (1,))])
def test_finalize_equals_masked_model_and_exports(tmp_path, model_and_params, scope, drop):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    model, params = model_and_params
    method, state = _pruned(params, scope, drop)
    masked = _presented(model, method, params, state)
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


def test_layer_drop_runs_only_kept_layers_and_finalize_removes_the_others(model_and_params):
    model, params = model_and_params
    method = LayerDrop(num_layers=3, drop=1, strategy="bottom")
    assert method.name == "layer_drop_bottom1" and method.kept == (1, 2)
    _, state = method.init(params, RNGS)
    seen, interventions = method.present(params, state, 0, False)
    assert seen is params and interventions.layers == (1, 2)
    _, inter = model.apply(
        {"params": params}, *_batch(), collect=("hidden",), interventions=interventions
    )
    assert sorted(inter) == ["hidden/1", "hidden/2"]
    small_params, small_config = method.finalize(params, state, CONFIG)
    assert small_config.num_hidden_layers == 2
    chex.assert_trees_all_equal(
        small_params["bert"]["encoder"]["layer"]["0"], params["bert"]["encoder"]["layer"]["1"]
    )
    np.testing.assert_allclose(
        _outputs(model.clone(config=small_config), small_params),
        _presented(model, method, params, state),
        atol=1e-6,
    )
    assert method.report(params, state) == {"layers_kept": [1, 2], "layers_dropped": [0]}


def _factorized(params, rank=6):
    """`params` with every encoder kernel as rank-`rank` SVD factors (methods/lowrank/)."""
    from methods.lowrank.svd import factorize

    def walk(tree, path):
        if not isinstance(tree, dict):
            return tree
        return {
            k: factorize(v, rank) if k == "kernel" and "encoder" in path else walk(v, path + (k,))
            for k, v in tree.items()
        }

    return walk(jax.device_get(params), ())


def test_factorized_kernels_finalize_as_their_product(model_and_params):
    """Lowrank, then structured pruning: the finalized model (u's rows, v's columns sliced;
    ranks kept) equals the masked one."""
    model, params = model_and_params
    params = _factorized(params)
    method, state = _pruned(params, scope="layer")
    masked = _presented(model, method, params, state)
    small_params, small_config = method.finalize(params, state, CONFIG)
    small = model.clone(config=small_config)
    np.testing.assert_allclose(_outputs(small, small_params), masked, atol=1e-5)
    layer = small_params["bert"]["encoder"]["layer"]["0"]
    assert layer["attention"]["self"]["query"]["kernel"]["v"].shape == (6, 16)  # 2 of 4 heads
    assert layer["attention"]["output"]["dense"]["kernel"]["u"].shape == (16, 6)
    assert layer["intermediate"]["dense"]["kernel"]["v"].shape == (6, 34)  # 48 - floor(14.4)
    assert layer["output"]["dense"]["kernel"]["u"].shape == (34, 6)


@pytest.mark.slow
def test_factorized_gradient_importance_equals_mask_gradient(model_and_params):
    model, params = model_and_params
    test_gradient_importance_equals_mask_gradient((model, _factorized(params)))
