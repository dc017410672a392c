"""Sub-model slicing vs the masked full-size forward (AutoTinyBERT's supernet)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax.models import build, checkpoints, submodel
from bertjax.models.config import BertConfig

CONFIG = BertConfig(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def _batch():
    ids = jax.random.randint(jax.random.key(1), (2, 9), 1, CONFIG.vocab_size)
    mask = jnp.ones_like(ids).at[1, 6:].set(0)
    return ids, mask, jnp.zeros_like(ids)


@pytest.mark.parametrize(
    "arch",
    [
        submodel.Arch(layers=2, hidden=24, heads=3, ffn=20),  # q/k/v 24 = hidden
        submodel.Arch(layers=1, hidden=16, heads=4, ffn=48),  # q/k/v 32 != hidden 16
        submodel.Arch(layers=3, hidden=32, heads=1, ffn=5),
    ],
)
def test_sliced_model_equals_masked_supernet(arch):
    model, params = build(CONFIG, head="regression", seed=0)
    ids, mask, types = _batch()
    collect = ("hidden", "attn_scores")
    full, full_inter = model.apply(
        {"params": params},
        ids,
        mask,
        types,
        collect=collect,
        interventions=submodel.interventions(CONFIG, arch),
    )
    small_model, fresh = build(submodel.sub_config(CONFIG, arch), head="regression")
    sliced = submodel.slice_params(params, CONFIG, arch)
    chex.assert_trees_all_equal_shapes(sliced, fresh)
    small, small_inter = small_model.apply({"params": sliced}, ids, mask, types, collect=collect)
    last = arch.layers - 1
    np.testing.assert_allclose(
        full["last_hidden_state"][..., : arch.hidden], small["last_hidden_state"], atol=1e-5
    )
    np.testing.assert_allclose(full["last_hidden_state"][..., arch.hidden :], 0.0, atol=1e-6)
    np.testing.assert_allclose(
        full_inter[f"attn_scores/{last}"][:, : arch.heads],
        small_inter[f"attn_scores/{last}"],
        atol=1e-5,
    )
    np.testing.assert_allclose(full["logits"], small["logits"], atol=1e-5)


def test_sliced_shapes_match_a_built_model():
    arch = submodel.Arch(layers=2, hidden=16, heads=4, ffn=20)
    _, params = build(CONFIG, head="classification")
    _, fresh = build(submodel.sub_config(CONFIG, arch), head="classification")
    chex.assert_trees_all_equal_shapes(submodel.slice_params(params, CONFIG, arch), fresh)


def test_full_width_masks_equal_the_dense_model():
    model, params = build(CONFIG, head="classification")
    ids, mask, types = _batch()
    dense, _ = model.apply({"params": params}, ids, mask, types)
    full = submodel.Arch.of_config(CONFIG)
    masked, _ = model.apply(
        {"params": params}, ids, mask, types, interventions=submodel.interventions(CONFIG, full)
    )
    chex.assert_trees_all_close(dense, masked, atol=1e-5)


def test_export_round_trip_of_a_sub_model(tmp_path):
    arch = submodel.Arch(layers=2, hidden=16, heads=4, ffn=20)
    _, params = build(CONFIG, head=None)
    small_config = submodel.sub_config(CONFIG, arch)
    small_model, _ = build(small_config)
    sliced = submodel.slice_params(params, CONFIG, arch)
    checkpoints.save_pretrained(small_model, sliced, tmp_path)
    loaded_model, loaded = checkpoints.load_pretrained(tmp_path)
    assert loaded_model.config.attention_head_size == CONFIG.head_dim
    ids, mask, types = _batch()
    a, _ = small_model.apply({"params": sliced}, ids, mask, types)
    b, _ = loaded_model.apply({"params": loaded}, ids, mask, types)
    np.testing.assert_allclose(a["last_hidden_state"], b["last_hidden_state"], atol=1e-6)


def test_arch_outside_the_model_is_refused():
    with pytest.raises(ValueError, match="heads=5"):
        submodel.mask_arrays(CONFIG, submodel.Arch(layers=1, hidden=8, heads=5, ffn=4))
