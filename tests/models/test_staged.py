"""The forward in pieces (`models/staged.py`) equals the whole model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import models
from bertjax.models import staged
from bertjax.models.interventions import BFLOAT16, Interventions

CONFIG = models.BertConfig(
    vocab_size=200, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=16,
)  # fmt: skip
NO_CHANGE = Interventions()
PRUNED = models.BertConfig(
    **{**CONFIG.__dict__, "pruned_heads": ((1,), (), (0, 3)), "intermediate_sizes": (64, 40, 24)}
)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    ids = jnp.asarray(rng.integers(1, 200, (3, 10)), jnp.int32)
    mask = jnp.asarray(np.arange(10)[None, :] < np.array([[10], [6], [3]]), jnp.int32)
    types = jnp.asarray(np.arange(10)[None, :] >= 5, jnp.int32) * mask
    return ids, mask, types


def _staged_logits(model, params, ids, mask, types, interventions=NO_CHANGE):
    x, bias = staged.embed(model, params, ids, mask, types)
    for i in range(staged.num_layers(params)):
        x = staged.layer(model, params, i, x, bias, interventions)
    return staged.head(model, params, x, interventions)


@pytest.mark.parametrize("config", [CONFIG, PRUNED], ids=["dense", "pruned"])
@pytest.mark.parametrize("matmul", [None, BFLOAT16], ids=["fp32", "bf16"])
def test_layer_at_a_time_equals_the_model(config, matmul):
    model = models.BertModel(config, head="classification", num_labels=3)
    ids, mask, types = _batch()
    params = model.init(jax.random.key(0), ids, mask, types)["params"]
    interventions = Interventions(matmul=matmul)
    expected = model.apply({"params": params}, ids, mask, types, interventions=interventions)
    got = _staged_logits(model, params, ids, mask, types, interventions)
    np.testing.assert_allclose(got, expected[0]["logits"], rtol=1e-5, atol=1e-6)
    assert staged.num_layers(params) == 3


def test_head_masks_reach_each_layer():
    model = models.BertModel(CONFIG, head="regression")
    ids, mask, types = _batch(1)
    params = model.init(jax.random.key(1), ids, mask, types)["params"]
    masked = Interventions(head_mask=jnp.asarray([[1, 0, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1.0]]))
    expected = model.apply({"params": params}, ids, mask, types, interventions=masked)[0]
    got = _staged_logits(model, params, ids, mask, types, masked)
    np.testing.assert_allclose(got, expected["logits"], rtol=1e-5, atol=1e-6)
    plain = _staged_logits(model, params, ids, mask, types)
    assert np.abs(np.asarray(plain - got)).max() > 1e-5  # the mask changed something


def test_stored_int8_and_factorized_kernels_run_in_pieces_as_in_the_whole_model():
    """Dynamic inference composes with the static artifacts: int8 storage, SVD factors."""
    from methods.lowrank import svd
    from methods.quant import storage

    model = models.BertModel(CONFIG, head="classification", num_labels=2)
    ids, mask, types = _batch(2)
    params = model.init(jax.random.key(2), ids, mask, types)["params"]
    layer0 = params["bert"]["encoder"]["layer"]["0"]
    factorized = jax.tree.map(lambda x: x, params)  # a copy whose FFN input is two factors
    factorized["bert"]["encoder"]["layer"]["0"]["intermediate"]["dense"]["kernel"] = svd.factorize(
        layer0["intermediate"]["dense"]["kernel"], 8
    )
    for stored in (storage.quantize_params(params), factorized):
        expected = model.apply({"params": stored}, ids, mask, types)[0]["logits"]
        got = _staged_logits(model, stored, ids, mask, types)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
