"""Stored int8: params, model, checkpoints and the PTQ run with int8 kernels and embeddings."""

import functools
import json
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import models
from bertjax.bench.latency import model_size
from bertjax.models.bert import Dense, Embed
from bertjax.models.interventions import Interventions
from bertjax.train import evaluation, loop, steps
from bertjax.train import mesh as mesh_lib
from configs import quant_ptq
from methods.quant import INT8_PRODUCTS, storage
from methods.quant.int8 import Int8Matmul, quantize_along

INT8_DOT = re.compile(r"stablehlo.dot_general .*: \(tensor<[0-9x]+xi8>, tensor<[0-9x]+xi8>\)")
# An int8 product is XLA's int8 dot or, where it fits, the VNNI kernel's custom call.
INT8_KERNEL = re.compile(r"custom_call @bertjax_int8_dense")
CONFIG = models.BertConfig(
    vocab_size=2000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=256, max_position_embeddings=64,
)  # fmt: skip
# Structurally pruned: layer 0 lost heads 1 and 3, the FFNs are 96 and 160 wide.
PRUNED = models.BertConfig(
    **{
        **CONFIG.__dict__,
        "pruned_heads": ((1, 3), ()),
        "intermediate_sizes": (96, 160),
        "intermediate_size": 160,
    }
)


def _inputs(config, seed=0, shape=(3, 11)):
    ids = np.random.default_rng(seed).integers(1, config.vocab_size, shape).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, 7:] = 0  # some padding
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


@functools.cache
def _forward(model, matmul):
    """The jitted logits of `model` (one compilation per model, matmul and params layout)."""

    def logits(params, inputs):
        args = (inputs[k] for k in steps.MODEL_INPUTS)
        interventions = Interventions(matmul=matmul)
        return model.apply({"params": params}, *args, interventions=interventions)[0]["logits"]

    return jax.jit(logits)


def _logits(model, params, inputs, matmul=None):
    return np.asarray(_forward(model, matmul)(params, inputs))


def _flat(tree):
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))
    }


def _assert_trees_identical(a, b):
    a, b = _flat(a), _flat(b)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def classifier():
    model, params = models.build(CONFIG, "classification", num_labels=3)
    return model, params


def test_float_embed_is_nn_embed_bit_for_bit():
    rng = np.random.default_rng(0)
    for rows in (50, 1):  # nn.Embed broadcasts a one-row table
        table = jnp.asarray(rng.standard_normal((rows, 16)), jnp.float32)
        ids = jnp.asarray(rng.integers(0, rows, (4, 9)), jnp.int32)
        ours = Embed(rows, 16).apply({"params": {"embedding": table}}, ids)
        theirs = nn.Embed(rows, 16).apply({"params": {"embedding": table}}, ids)
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    # An int8 table: the gathered int8 rows times their scales, i.e. exactly nn.Embed
    # of the dequantized table.
    table = jnp.asarray(rng.standard_normal((50, 16)), jnp.float32)
    ids = jnp.asarray(rng.integers(0, 50, (4, 9)), jnp.int32)
    stored = storage.quantize_embedding(table)
    ours = Embed(50, 16).apply({"params": {"embedding": stored}}, ids)
    back = storage.dequantize_params({"embedding": stored})["embedding"]
    theirs = nn.Embed(50, 16).apply({"params": {"embedding": back}}, ids)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert 0 < float(jnp.abs(ours - jnp.take(table, ids, axis=0)).max()) < 0.05
    # Same param name and shape at init.
    shapes = jax.eval_shape(lambda: Embed(7, 5).init(jax.random.key(0), ids))
    assert shapes["params"]["embedding"].shape == (7, 5)


def test_quantize_params_stores_int8_values_and_per_channel_or_row_scales(classifier):
    _, params = classifier
    q = storage.quantize_params(params)
    query = params["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
    stored = q["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
    assert stored["qvalue"].dtype == jnp.int8 and stored["qvalue"].shape == (64, 64)
    assert stored["scale"].dtype == jnp.float32 and stored["scale"].shape == (64,)
    # The grid of int8_dot_general's right operand (per output channel), exactly.
    values, scale = quantize_along(query, (0,))
    np.testing.assert_array_equal(np.asarray(stored["qvalue"]), np.asarray(values))
    np.testing.assert_array_equal(np.asarray(stored["scale"]), np.asarray(scale).reshape(-1))
    assert int(np.abs(np.asarray(stored["qvalue"])).max()) == 127
    words = q["bert"]["embeddings"]["word_embeddings"]["embedding"]
    assert words["qvalue"].shape == (2000, 64) and words["scale"].shape == (2000,)
    np.testing.assert_array_equal(np.abs(np.asarray(words["qvalue"])).max(axis=1), 127)
    # Biases and LayerNorms stay float; the MLM transform is never selected.
    assert q["classifier"]["bias"].dtype == jnp.float32
    assert q["bert"]["embeddings"]["LayerNorm"]["scale"].dtype == jnp.float32
    # Dequantized: within half a grid step of the float weights.
    back = storage.dequantize_params(q)
    step = np.asarray(stored["scale"])[None, :]
    error = np.abs(back["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
                   - np.asarray(query))  # fmt: skip
    assert (error <= 0.5 * step * (1 + 1e-6)).all()
    # Quantizing again changes nothing; unknown leaves and MLM-tied tables are refused.
    _assert_trees_identical(storage.quantize_params(q), q)
    with pytest.raises(ValueError, match="only `kernel` and `embedding`"):
        storage.quantize_params(params, r"classifier/bias")
    with_mlm = {**params, "cls": {"predictions": {"bias": jnp.zeros(2000)}}}
    with pytest.raises(ValueError, match="MLM head"):
        storage.quantize_params(with_mlm)
    storage.quantize_params(with_mlm, storage.DENSE)  # without the tables: fine


def test_stored_int8_dense_equals_int8_products_on_the_same_grid(classifier):
    model, params = classifier
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 5, 64)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((64, 24)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(24), jnp.float32)
    dense = Dense(24)
    dynamic = dense.apply(
        {"params": {"kernel": kernel, "bias": bias}}, x, Interventions(matmul=INT8_PRODUCTS)
    )
    stored = dense.apply({"params": {"kernel": storage.quantize_kernel(kernel), "bias": bias}}, x)
    np.testing.assert_allclose(np.asarray(stored), np.asarray(dynamic), rtol=1e-6, atol=1e-6)
    exact = x @ kernel + bias
    assert float(jnp.abs(stored - exact).max()) > 1e-4  # int8 rounding happened

    # The whole model: Dense layers stored in int8 == int8_dot_general on float weights
    # (attention products int8 in both: the same intervention).
    inputs = _inputs(CONFIG)
    q = storage.quantize_params(params, storage.DENSE)
    dynamic = _logits(model, params, inputs, INT8_PRODUCTS)
    np.testing.assert_allclose(
        _logits(model, q, inputs, INT8_PRODUCTS), dynamic, rtol=1e-5, atol=1e-6
    )
    # The compiled forward multiplies int8 x int8 into int32 for every Dense (6 a layer,
    # q/k/v fused into one: 4 products; pooler, classifier), and nothing else with float
    # attention.
    lowered = (
        jax.jit(lambda p: model.apply({"params": p}, *(inputs[k] for k in steps.MODEL_INPUTS)))
        .lower(q)
        .as_text()
    )
    assert len(INT8_DOT.findall(lowered)) + len(INT8_KERNEL.findall(lowered)) == 2 * 4 + 2


def test_static_input_scale_quantizes_by_the_calibrated_scale():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((3, 4, 32)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((32, 8)), jnp.float32)
    bias = jnp.zeros(8)
    absmax = float(jnp.abs(x).max())
    leaf = storage.quantize_kernel(kernel, absmax / 127)
    assert leaf["input_scale"].shape == () and leaf["input_scale"].dtype == jnp.float32
    out = Dense(8).apply({"params": {"kernel": leaf, "bias": bias}}, x)
    x_q = np.clip(np.round(np.asarray(x) / (absmax / 127)), -127, 127)
    expected = (
        (x_q @ np.asarray(leaf["qvalue"], np.float64)) * (absmax / 127) * np.asarray(leaf["scale"])
    )
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    # A too small static scale clips: the output is not the dynamic one's.
    clipped = Dense(8).apply(
        {"params": {"kernel": storage.quantize_kernel(kernel, absmax / 1270), "bias": bias}}, x
    )
    assert float(jnp.abs(clipped - out).max()) > 0.1


def test_save_load_round_trip_is_exact_and_small(tmp_path, classifier):
    model, params = classifier
    dense = storage.quantize_params(params)
    layer0 = "bert/encoder/layer/0/attention/self/query"
    static = storage.quantize_params(params, input_scales={layer0: jnp.float32(0.05)})
    inputs = _inputs(CONFIG)
    fp32_dir = models.save_pretrained(model, params, tmp_path / "fp32")
    for name, q in (("dynamic", dense), ("static", static)):
        out = models.save_pretrained(model, q, tmp_path / name)
        hf = json.loads((out / "config.json").read_text())
        info = hf["bertjax_quantization"]
        assert info["format"] == "int8" and info["weights"] == "per_output_channel"
        assert info["activations"] == ("mixed" if name == "static" else "dynamic_per_token")
        from safetensors.numpy import load_file

        tensors = load_file(out / "model.safetensors")
        weight = tensors["bert.encoder.layer.0.attention.self.query.weight"]
        assert weight.dtype == np.int8 and weight.shape == (64, 64)  # [out, in]
        assert tensors["bert.encoder.layer.0.attention.self.query.weight_scale"].shape == (64,)
        ffn = q["bert"]["encoder"]["layer"]["1"]["intermediate"]["dense"]["kernel"]
        np.testing.assert_array_equal(
            tensors["bert.encoder.layer.1.intermediate.dense.weight"], np.asarray(ffn["qvalue"]).T
        )  # torch Linear's [out, in]
        assert tensors["bert.embeddings.word_embeddings.weight"].dtype == np.int8
        assert tensors["bert.embeddings.word_embeddings.weight_scale"].shape == (2000,)
        assert ("bert.encoder.layer.0.attention.self.query.input_scale" in tensors) == (
            name == "static"
        )
        model2, loaded = models.load_pretrained(out, head="classification")
        assert model2.num_labels_out == 3
        _assert_trees_identical(loaded, q)  # int8 values and scales, not dequantized
        _, floats = models.load_pretrained(out, head="classification", dequantize=True)
        _assert_trees_identical(
            floats, jax.tree_util.tree_map(jnp.asarray, storage.dequantize_params(q))
        )
        np.testing.assert_array_equal(_logits(model2, loaded, inputs), _logits(model, q, inputs))
        size = model_size(loaded)
        assert size["params"] == model_size(params)["params"]
        file_size = (out / "model.safetensors").stat().st_size
        assert 0 <= file_size - size["bytes"] < 16_000  # the safetensors header
    # Bytes: int8 values + float32 scales, biases and LayerNorms. The word embeddings are
    # 60 % of this model's parameters (MiniLM-L6: 52 %), so they must be int8 too.
    fp32_size = (fp32_dir / "model.safetensors").stat().st_size
    int8_size = (tmp_path / "dynamic" / "model.safetensors").stat().st_size
    leaves = _flat(dense)
    expected = sum(v.nbytes for v in leaves.values())
    assert expected == sum(v.size * (1 if k.endswith("qvalue") else 4) for k, v in leaves.items())
    assert int8_size <= 0.3 * fp32_size, (int8_size, fp32_size)


def test_pruned_int8_model_round_trips_through_zero_padding(tmp_path):
    model, params = models.build(PRUNED, "classification")
    layer0 = params["bert"]["encoder"]["layer"]["0"]
    assert layer0["attention"]["self"]["query"]["kernel"].shape == (64, 32)
    assert layer0["intermediate"]["dense"]["kernel"].shape == (64, 96)
    q = storage.quantize_params(params)
    out = models.save_pretrained(model, q, tmp_path / "pruned")
    from safetensors.numpy import load_file

    tensors = load_file(out / "model.safetensors")
    # Stored zero-padded (to all heads, the widest FFN): int8 zeros, scale 1.
    query = tensors["bert.encoder.layer.0.attention.self.query.weight"]
    scale = tensors["bert.encoder.layer.0.attention.self.query.weight_scale"]
    assert query.dtype == np.int8 and query.shape == (64, 64)
    removed = np.r_[16:32, 48:64]  # heads 1 and 3 (head dim 16)
    assert not query[removed].any() and (scale[removed] == 1).all()
    ffn = tensors["bert.encoder.layer.0.intermediate.dense.weight"]
    assert ffn.shape == (160, 64) and not ffn[96:].any()
    assert (tensors["bert.encoder.layer.0.intermediate.dense.weight_scale"][96:] == 1).all()
    ffn_out = tensors["bert.encoder.layer.0.output.dense.weight"]
    assert ffn_out.shape == (64, 160) and not ffn_out[:, 96:].any()
    model2, loaded = models.load_pretrained(out, head="classification")
    assert model2.config.pruned_heads == PRUNED.pruned_heads
    assert model2.config.intermediate_sizes == PRUNED.intermediate_sizes
    _assert_trees_identical(loaded, q)
    inputs = _inputs(PRUNED)
    np.testing.assert_array_equal(_logits(model2, loaded, inputs), _logits(model, q, inputs))


def test_transformers_loads_the_dequantized_export(tmp_path, classifier):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model, params = classifier
    q = storage.quantize_params(params)
    out = models.save_pretrained(model, q, tmp_path / "fp32", dequantize=True)
    hf = json.loads((out / "config.json").read_text())
    assert "bertjax_quantization" not in hf
    reference = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    inputs = _inputs(CONFIG)
    with torch.no_grad():
        theirs = reference(**{k: torch.tensor(v, dtype=torch.long) for k, v in inputs.items()})
    back = storage.dequantize_params(q)
    np.testing.assert_allclose(_logits(model, back, inputs), theirs.logits.numpy(), atol=1e-5)
    # ... and it is the dequantized model: ours loads it to the same float32 values.
    _, loaded = models.load_pretrained(out, head="classification")
    _assert_trees_identical(loaded, jax.tree_util.tree_map(jnp.asarray, back))


@pytest.mark.parametrize("scales", ["static"])
def test_ptq_int8_run_evaluates_and_exports_the_int8_artifact(
    tmp_path, shrink, monkeypatch, scales
):
    config = shrink(
        quant_ptq.get_config(f"model=tiny,task=mrpc,smoke=True,int8=True,scales={scales}")
    )
    config.quant.calibration_batches = 2
    calls = []
    evaluate = evaluation.evaluate

    def recording(eval_step, state, encoded, task, batch_size, mesh):
        metrics, logits = evaluate(eval_step, state, encoded, task, batch_size, mesh)
        calls.append(dict(encoded=encoded, logits=logits))
        return metrics, logits

    monkeypatch.setattr(evaluation, "evaluate", recording)
    results = loop.train_and_evaluate(config, tmp_path)
    assert results["method"] == f"quant_ptq_int8_{scales}_minmax"
    assert results["int8_storage"] and results["activation_sites"] == 2 * 6 + 2
    model, params = models.load_pretrained(tmp_path / "export", head="classification")
    hf = json.loads((tmp_path / "export" / "config.json").read_text())
    assert hf["bertjax_quantization"]["activations"] == "static_per_tensor"
    query = params["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
    assert query["qvalue"].dtype == jnp.int8 and query["input_scale"].shape == ()
    assert results["bytes"] == model_size(params)["bytes"]
    assert results["bytes"] < 0.3 * model_size(storage.dequantize_params(params))["bytes"]
    # The run's evaluation is the artifact's arithmetic.
    (call,) = calls
    step = jax.jit(
        lambda p, _, inputs: model.apply({"params": p}, *(inputs[k] for k in steps.MODEL_INPUTS))[
            0
        ]["logits"]
    )
    logits = evaluation.predict(step, params, None, call["encoded"], 8, mesh_lib.make_mesh())
    np.testing.assert_allclose(call["logits"], logits, rtol=1e-6, atol=1e-6)
    # export_fp32/ is the dequantized copy.
    _, fp32 = models.load_pretrained(tmp_path / "export_fp32", head="classification")
    _assert_trees_identical(
        fp32, jax.tree_util.tree_map(jnp.asarray, storage.dequantize_params(params))
    )
    with pytest.raises(ValueError, match="calibration batches"):
        Int8Matmul(activations="static")


def test_output_blocks_fuse_residual_and_layer_norm_into_the_int8_product(classifier):
    from bertjax import kernels
    from bertjax.models import interventions as interventions_lib

    class Unfused(interventions_lib.Float32):
        def stored_int8_norm(self, *args):
            return None

    model, params = classifier
    q = storage.quantize_params(params, storage.DENSE)
    inputs = _inputs(CONFIG)
    fused = _logits(model, q, inputs, interventions_lib.DEFAULT_MATMUL)
    np.testing.assert_allclose(fused, _logits(model, q, inputs, Unfused()), atol=2e-5)
    if kernels.available():  # both output blocks of both layers, on CPU
        args = (inputs[k] for k in steps.MODEL_INPUTS)
        text = jax.jit(lambda p: model.apply({"params": p}, *args)).lower(q).as_text()
        assert text.count(f"custom_call @{kernels.NORM_TARGET}(") == 2 * 2
