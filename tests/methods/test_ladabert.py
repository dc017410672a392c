"""LadaBERT: SVD, then magnitude pruning of the factors in rounds to an exact ratio."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import models
from bertjax.models import convert
from bertjax.train.method_config import build_method
from configs import ladabert as ladabert_config
from methods.base import Context
from methods.lowrank import LadaBert, factorized_size
from methods.lowrank.ladabert import cubic_counts, spread_steps
from methods.pruning import masks as mask_lib

CONFIG = models.BertConfig(
    vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=128, max_position_embeddings=32,
)  # fmt: skip
DENSE = 2 * (4 * 32 * 32 + 2 * 32 * 128)  # encoder Dense kernel values


@pytest.fixture(scope="module")
def params():
    return models.build(CONFIG, head="classification", num_labels=2, seed=0)[1]


def _nonzero_factor_values(method, params, state=None):
    masked = params if state is None else mask_lib.apply_masks(params, state["masks"])
    selected = mask_lib.select_leaves(masked, method.factor_select)
    leaves = zip(
        jax.tree_util.tree_leaves(masked), jax.tree_util.tree_leaves(selected), strict=True
    )
    return sum(int(np.count_nonzero(leaf)) for leaf, on in leaves if on)


def test_cubic_counts_rise_to_the_total_exactly():
    assert cubic_counts(1000, 4) == (579, 875, 985, 1000)  # 1000 - floor(1000 (1 - k/4)^3)
    assert cubic_counts(7, 1) == (7,)
    assert spread_steps(4, 30) == (10, 20, 30) and spread_steps(1, 30) == ()


@pytest.mark.parametrize(("target", "factor_ratio"), [(0.3, 0.0), (0.25, 0.5), (0.41, 0.9)])
def test_rounds_reach_the_target_ratio_exactly(params, target, factor_ratio):
    method = LadaBert(target_ratio=target, factor_ratio=factor_ratio, rounds=3, round_steps=(2, 4))
    factored, state = method.init(params, {})
    size = factorized_size(factored)
    assert size["lowrank_dense_params"] == DENSE and size["lowrank_kernels"] == 12
    kept = round(Fraction(str(target)) * DENSE)
    total = size["lowrank_factor_params"] - kept  # what the rounds must prune
    counts = cubic_counts(total, 3)
    update = jax.jit(method.update)
    seen = [_nonzero_factor_values(method, factored, state)]
    grads = jax.tree_util.tree_map(jnp.zeros_like, factored)
    for step in range(6):
        state = update(state, factored, grads, {}, step)
        seen.append(_nonzero_factor_values(method, factored, state))
    fewer = [size["lowrank_factor_params"] - c for c in counts]
    # Round 1 at init; round 2 after 2 updates, round 3 (the last) after 4.
    assert seen == [fewer[0], fewer[0], fewer[1], fewer[1], fewer[2], fewer[2], fewer[2]]
    report = method.report(factored, state)
    assert report["ladabert_nonzero_factor_params"] == kept
    assert report["ladabert_compression_ratio"] == kept / DENSE
    assert abs(report["ladabert_compression_ratio"] - target) <= 0.5 / DENSE


def test_pruned_factors_stay_pruned_and_finalize_writes_zeros(params):
    method = LadaBert(target_ratio=0.3, rounds=2, round_steps=(1,))
    factored, state = method.init(params, {})
    first = jax.device_get(state["masks"])
    grads = jax.tree_util.tree_map(jnp.zeros_like, factored)
    state = method.update(state, factored, grads, {}, 0)
    pairs = zip(
        jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(state["masks"]), strict=True
    )
    for old, new in pairs:
        assert np.all(np.asarray(new) <= np.asarray(old))  # a pruned value is never revived
    final, _ = method.finalize(factored, state, CONFIG)
    kernel = final["bert"]["encoder"]["layer"]["0"]["output"]["dense"]["kernel"]
    assert convert.is_factorized(kernel)
    assert _nonzero_factor_values(method, final) == round(Fraction("0.3") * DENSE)


def test_config_builds_the_hybrid_with_logit_distillation():
    config = ladabert_config.get_config("teacher=T,task=mrpc,target_ratio=0.5,rounds=4")
    assert config.model.name == "T" and config.teacher == "T"
    method = build_method(config, Context(total_steps=100, model=CONFIG, teacher=CONFIG))
    assert method.name == "ladabert+distill_kd_soft_ce"
    lada = method.methods[0]
    assert lada.round_steps == (23, 47, 70)
    assert lada.resolved_factor_ratio == pytest.approx(0.5**0.5)
    with pytest.raises(ValueError, match="factor_ratio"):
        LadaBert(target_ratio=0.5, factor_ratio=0.4)
