"""The token-reduced runtime: gathered segments equal the masked model, compiled once.

(Named `_runtime` so that it does not clash with tests/methods/test_token_reduction.py:
the test directories are not packages.)
"""

import jax
import jax.numpy as jnp
import numpy as np

from bertjax import models
from bertjax.inference import token_reduction as runtime
from bertjax.models.interventions import Interventions
from methods.base import Context
from methods.dynamic.token_reduction import TokenReduction

CONFIG = models.BertConfig(
    vocab_size=200, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=64,
)  # fmt: skip


def _setup(bias=0.0, seed=0):
    model = models.BertModel(CONFIG, head="classification", num_labels=2)
    rng = np.random.default_rng(seed)
    lengths = np.array([40, 23, 9, 30])
    ids = rng.integers(1, 200, (4, 48)).astype(np.int32)
    mask = (np.arange(48)[None, :] < lengths[:, None]).astype(np.int32)
    types = np.zeros_like(ids)
    params = model.init(jax.random.key(0), ids[:1], mask[:1])["params"]
    method = TokenReduction.from_config({"layers": (1, 3)}, Context(model=CONFIG))
    params, _ = method.init(params, {"params": jax.random.key(1), "state": jax.random.key(2)})
    # Shift the second layer's output bias so that about half the tokens stay.
    for layer in ("1", "3"):
        out = params["token_policy"][layer]["dense_2"]
        out["bias"] = out["bias"] + bias
    model_params, selection_params = method.present(params, {}, 0, train=False)
    return model, model_params, selection_params.tokens, (ids, mask, types)


def test_gather_puts_cls_first_then_kept_tokens_in_order():
    x = jnp.arange(6, dtype=jnp.float32)[None, :, None]
    keep = jnp.array([[True, False, True, False, True, False]])
    got, kept = runtime.gather_kept(x, keep, 4)
    np.testing.assert_array_equal(got[0, :, 0], [0, 2, 4, 1])
    np.testing.assert_array_equal(kept[0], [True, True, True, False])


def test_reduced_runtime_equals_the_masked_model():
    model, params, selection, (ids, mask, types) = _setup()
    reduced = runtime.ReducedForward(model, params, selection)
    logits, kept = reduced(ids, mask, types)
    masked, inter = model.apply(
        {"params": params}, ids, mask, types,
        interventions=Interventions(tokens=selection), collect=("tokens",),
    )  # fmt: skip
    np.testing.assert_allclose(logits, masked["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(kept[:, 1], np.sum(inter["token_keep/3"], -1))
    lengths = reduced.executed_lengths(ids, mask, types)
    assert lengths[0] == 48 and lengths[2] < lengths[0], lengths  # really shorter
    dense, _ = model.apply({"params": params}, ids, mask, types)
    np.testing.assert_allclose(reduced.dense(ids, mask, types), dense["logits"], atol=1e-5)


def test_keep_all_equals_the_dense_model():
    model, params, selection, (ids, mask, types) = _setup(bias=50.0)  # every p ~ 1
    reduced = runtime.ReducedForward(model, params, selection)
    logits, kept = reduced(ids, mask, types)
    np.testing.assert_array_equal(kept[:, 0], mask.sum(-1))
    dense, _ = model.apply({"params": params}, ids, mask, types)
    np.testing.assert_allclose(logits, dense["logits"], rtol=1e-5, atol=1e-5)


def test_each_bucket_compiles_once():
    model, params, selection, (ids, mask, types) = _setup()
    reduced = runtime.ReducedForward(model, params, selection)
    for _ in range(3):
        reduced(ids, mask, types)
    first = dict(reduced.traces)
    assert first and set(first.values()) == {1}
    reduced(ids[2:3], mask[2:3], types[2:3])  # a shorter row: new buckets, once each
    assert len(reduced.traces) > len(first) and set(reduced.traces.values()) == {1}
    assert runtime.bucket_of(17) == 24 and runtime.bucket_of(9999) == 512


def test_an_export_carries_its_policy_and_loads_as_the_same_reduced_model(tmp_path):
    model = models.BertModel(CONFIG, head="classification", num_labels=2)
    _, model_params, selection, (ids, mask, types) = _setup()
    method = TokenReduction.from_config({"layers": (1, 3)}, Context(model=CONFIG))
    policy = {str(layer): p for layer, p in zip(method.layers, selection.params, strict=True)}
    exported, _ = method.finalize({**model_params, "token_policy": policy}, {}, CONFIG)
    models.save_pretrained(model, exported, tmp_path, labels=("0", "1"))
    loaded = runtime.load(tmp_path)
    assert loaded.selection.layers == (1, 3)
    want, want_kept = runtime.ReducedForward(model, model_params, selection)(ids, mask, types)
    got, got_kept = loaded(ids, mask, types)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got_kept, want_kept)
    _, plain = models.load_pretrained(tmp_path, head="classification")
    assert "token_policy" not in plain  # the model loader skips the side tree
