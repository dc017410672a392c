"""Low-rank factorization: the SVD math, the factorized model, its checkpoints, one run."""

import json

import jax
import numpy as np
import pytest

from bertjax import models
from bertjax.bench.latency import model_size
from bertjax.models import convert
from bertjax.train import loop, steps
from configs import finetune
from configs import ladabert as ladabert_config
from configs import lowrank as lowrank_config
from methods.lowrank import LowRank, factorized_size, svd
from methods.lowrank.factorize import factor_paths
from methods.quant import storage

CONFIG = models.BertConfig(
    vocab_size=2000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=256, max_position_embeddings=64,
)  # fmt: skip


def _inputs(config, seed=0, shape=(3, 11)):
    ids = np.random.default_rng(seed).integers(1, config.vocab_size, shape).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, 7:] = 0  # some padding
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _logits(model, params, inputs):
    args = (inputs[k] for k in steps.MODEL_INPUTS)
    return np.asarray(jax.jit(model.apply)({"params": params}, *args)[0]["logits"])


@pytest.fixture(scope="module")
def classifier():
    return models.build(CONFIG, head="classification", num_labels=3, seed=1)


@pytest.mark.parametrize("shape", [(64, 64), (64, 256), (256, 64)])
@pytest.mark.parametrize("rank", [1, 7, 40])
def test_rank_r_error_is_the_root_of_the_dropped_squared_singular_values(shape, rank):
    kernel = np.random.default_rng(rank).normal(size=shape)
    factors = svd.factorize(kernel, rank)
    assert factors["u"].shape == (shape[0], rank) and factors["v"].shape == (rank, shape[1])
    error = np.linalg.norm(kernel - svd.multiply(factors))
    dropped = np.linalg.svd(kernel, compute_uv=False)[rank:]
    np.testing.assert_allclose(error, np.sqrt(np.sum(dropped**2)), rtol=1e-4)
    assert svd.tail_error(svd.singular_values(kernel), rank) == pytest.approx(error, rel=1e-4)
    # sqrt(Sigma) on both sides: the two factors carry the same spectrum.
    np.testing.assert_allclose(
        np.linalg.norm(factors["u"], axis=0), np.linalg.norm(factors["v"], axis=1), rtol=1e-4
    )


def test_rank_by_energy_is_the_smallest_that_keeps_it():
    values = np.array([4.0, 2.0, 1.0, 1.0])  # squares 16, 4, 1, 1 of 22
    assert svd.rank_for_energy(values, 16 / 22) == 1
    assert svd.rank_for_energy(values, 16 / 22 + 1e-6) == 2
    assert svd.rank_for_energy(values, 21 / 22) == 3
    assert svd.rank_for_energy(values, 1.0) == 4
    assert svd.rank_for_ratio((384, 384), 0.5) == 96 and svd.rank_for_ratio((384, 1536), 0.5) == 153
    assert svd.break_even_rank((384, 1536)) == pytest.approx(307.2)
    # Rounded to multiples of 16 (the int8 kernel's column block): ratio down, energy up.
    kernel = np.random.default_rng(0).standard_normal((384, 1536)).astype(np.float32)
    assert LowRank(ratio=0.5, multiple=16).rank_of(kernel) == 144
    assert LowRank(ratio=0.01, multiple=16).rank_of(kernel) == 16  # at least one multiple
    exact = LowRank(energy=0.5).rank_of(kernel)
    assert LowRank(energy=0.5, multiple=16).rank_of(kernel) == -(-exact // 16) * 16
    assert LowRank(rank=100, multiple=16).rank_of(kernel) == 100  # explicit: as given
    with pytest.raises(ValueError, match="multiple must be >= 1"):
        LowRank(ratio=0.5, multiple=0)


def test_full_rank_factors_reproduce_the_dense_model(classifier):
    model, params = classifier
    factored, _ = LowRank(rank=10_000).init(params, {})
    kernel = factored["bert"]["encoder"]["layer"]["1"]["intermediate"]["dense"]["kernel"]
    assert convert.is_factorized(kernel) and kernel["u"].shape == (64, 64)
    assert not convert.is_factorized(factored["bert"]["pooler"]["dense"]["kernel"])
    inputs = _inputs(CONFIG)
    np.testing.assert_allclose(
        _logits(model, factored, inputs), _logits(model, params, inputs), atol=2e-5
    )


def test_truncated_factors_run_as_two_products_with_their_own_error(classifier):
    model, params = classifier
    factored, _ = LowRank(rank=8).init(params, {})
    # The model equals the dense model whose kernels are u @ v (the fused q/k/v falls back).
    remultiplied = jax.tree_util.tree_map(lambda x: x, convert.dequantize(jax.device_get(factored)))
    inputs = _inputs(CONFIG, seed=2)
    low, dense = _logits(model, factored, inputs), _logits(model, remultiplied, inputs)
    np.testing.assert_allclose(low, dense, atol=2e-5)
    assert np.abs(low - _logits(model, params, inputs)).max() > 1e-4  # rank 8 is not exact
    size = factorized_size(factored)
    assert size["lowrank_kernels"] == 12  # 6 Dense kernels per layer, 2 layers
    assert set(size["lowrank_ranks"].values()) == {8}
    assert size["lowrank_dense_params"] == 2 * (4 * 64 * 64 + 2 * 64 * 256)
    assert size["lowrank_factor_params"] == 2 * 8 * (4 * 128 + 2 * 320)
    assert size["lowrank_fewer_flops_kernels"] == 12


def test_ranks_by_energy_differ_per_kernel(classifier):
    _, params = classifier
    ranks = factorized_size(LowRank(energy=0.5).init(params, {})[0])["lowrank_ranks"]
    kernel = params["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
    expected = svd.rank_for_energy(svd.singular_values(kernel), 0.5)
    assert ranks["bert/encoder/layer/0/attention/self/query/kernel"] == expected
    with pytest.raises(ValueError, match="exactly one"):
        LowRank(rank=4, energy=0.5)


def test_factorized_export_round_trip(tmp_path, classifier):
    model, params = classifier
    factored, _ = LowRank(ratio=0.3).init(params, {})
    models.save_pretrained(model, factored, tmp_path / "export")
    models.save_pretrained(model, factored, tmp_path / "fp32", dequantize=True)
    info = json.loads((tmp_path / "export" / "config.json").read_text())["bertjax_lowrank"]
    assert info["factorized_kernels"] == 12
    assert info["ranks"] == factorized_size(factored)["lowrank_ranks"]
    loaded_model, loaded = models.load_pretrained(tmp_path / "export", head="classification")
    # Same tree (every kernel still {u, v}), same values: raises on any difference.
    jax.tree_util.tree_map(np.testing.assert_array_equal, factored, loaded)
    inputs = _inputs(CONFIG, seed=3)
    expected = _logits(model, factored, inputs)
    np.testing.assert_array_equal(_logits(loaded_model, loaded, inputs), expected)
    # The fp32 copy holds plain kernels u @ v (HF layout), and runs the same model.
    assert "bertjax_lowrank" not in json.loads((tmp_path / "fp32" / "config.json").read_text())
    _, dense = models.load_pretrained(tmp_path / "fp32", head="classification")
    assert not convert.has_factorized(dense)
    np.testing.assert_allclose(_logits(model, dense, inputs), expected, atol=2e-5)


def test_transformers_loads_the_remultiplied_export(tmp_path, classifier):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model, params = classifier
    factored, _ = LowRank(rank=5).init(params, {})
    out = models.save_pretrained(model, factored, tmp_path / "fp32", dequantize=True)
    reference = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    inputs = _inputs(CONFIG, seed=4)
    with torch.no_grad():
        theirs = reference(**{k: torch.tensor(v, dtype=torch.long) for k, v in inputs.items()})
    np.testing.assert_allclose(_logits(model, factored, inputs), theirs.logits.numpy(), atol=2e-5)


def test_int8_factors_run_in_int8_and_round_trip_at_a_quarter_of_the_bytes(tmp_path, classifier):
    """Low-rank, then int8: both factors of every kernel are stored in int8 (the chain
    lowrank -> int8 of the operator-order study), run, save and load as such."""
    model, params = classifier
    factored, _ = LowRank(ratio=0.3).init(params, {})
    q = storage.quantize_params(factored)
    factors = [leaf[f] for leaf in factor_paths(q).values() for f in (convert.U, convert.V)]
    assert len(factors) == 24 and all(convert.is_quantized(f) for f in factors)
    assert all(np.asarray(f["qvalue"]).dtype == np.int8 for f in factors)
    assert factorized_size(q)["lowrank_ranks"] == factorized_size(factored)["lowrank_ranks"]
    inputs = _inputs(CONFIG, seed=5)
    floats, int8 = _logits(model, factored, inputs), _logits(model, q, inputs)
    assert 0 < np.abs(int8 - floats).max() < 0.05  # int8 arithmetic ran, close to float
    # The dequantized tree (u and v multiplied out after dequantizing) runs the int8
    # grid's weights in float.
    dense = jax.tree_util.tree_map(np.asarray, convert.dequantize(jax.device_get(q)))
    assert not convert.has_stored(dense)
    out = models.save_pretrained(model, q, tmp_path / "int8")
    hf = json.loads((out / "config.json").read_text())
    assert hf["bertjax_lowrank"]["ranks"] == factorized_size(factored)["lowrank_ranks"]
    assert hf["bertjax_quantization"]["int8_tensors"] == 24 + 3 + 2  # + embeddings, pooler+cls
    loaded_model, loaded = models.load_pretrained(out, head="classification")
    jax.tree_util.tree_map(np.testing.assert_array_equal, q, loaded)  # same tree and values
    np.testing.assert_array_equal(_logits(loaded_model, loaded, inputs), int8)
    float_dir = models.save_pretrained(model, factored, tmp_path / "float")
    ratio = (out / "model.safetensors").stat().st_size / (
        float_dir / "model.safetensors"
    ).stat().st_size
    assert ratio < 0.3, ratio
    # For transformers: one dense float kernel per Dense, equal to the dequantized tree.
    _, plain = models.load_pretrained(
        models.save_pretrained(model, q, tmp_path / "fp32", dequantize=True),
        head="classification",
    )
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), plain, dense
    )


@pytest.mark.slow  # ~25 s: a run end to end
def test_lowrank_run_trains_the_factors_and_exports_both(tmp_path, shrink):
    config = shrink(lowrank_config.get_config("model=tiny,task=sst2,smoke=True,rank=4"))
    results = loop.train_and_evaluate(config, tmp_path)
    assert results["method"] == "lowrank"
    assert set(results["lowrank_ranks"].values()) == {4}
    _, params = models.load_pretrained(tmp_path / "export", head="classification")
    assert convert.has_factorized(params)
    assert results["params"] == model_size(params)["params"]  # the factors, not W
    _, dense = models.load_pretrained(tmp_path / "export_fp32", head="classification")
    assert not convert.has_factorized(dense)


@pytest.mark.slow  # ~60 s: a teacher, then LadaBERT end to end
def test_ladabert_run_reaches_its_ratio_and_exports_factors(tmp_path, shrink):
    loop.train_and_evaluate(
        shrink(finetune.get_config("model=tiny,task=sst2,smoke=True")), tmp_path / "teacher"
    )
    teacher = tmp_path / "teacher" / "export"
    config = shrink(
        ladabert_config.get_config(f"teacher={teacher},task=sst2,smoke=True,target_ratio=0.4")
    )
    results = loop.train_and_evaluate(config, tmp_path / "lada")
    assert results["method"] == "ladabert+distill_kd_soft_ce"
    dense = results["lowrank_dense_params"]
    assert results["ladabert_nonzero_factor_params"] == round(0.4 * dense)
    _, params = models.load_pretrained(tmp_path / "lada" / "export", head="classification")
    factors = [
        np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if "encoder" in str(path) and path[-1].key in ("u", "v")
    ]
    assert sum(int(np.count_nonzero(f)) for f in factors) == round(0.4 * dense)
