"""Real int8 matmuls: exact on int8-representable operands, close otherwise, s8 in the HLO."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import models
from bertjax.models.interventions import Interventions
from bertjax.train import evaluation, loop, steps
from bertjax.train import mesh as mesh_lib
from configs import quant_ptq
from methods.quant import INT8_PRODUCTS, Int8Matmul, int8_dot_general, storage

DENSE = (((2,), (0,)), ((), ()))  # [B, T, K] x [K, N]
ATTENTION = (((3,), (3,)), ((0, 1), (0, 1)))  # q.k: [B, H, T, d] x [B, H, S, d]


def _integers_with_full_range(rng, shape, axis):
    """Integer floats in [-127, 127] with |max| = 127 along every slice over `axis`: scale 1."""
    x = rng.integers(-126, 127, shape).astype(np.float32)
    first = [slice(None)] * len(shape)
    first[axis] = 0
    x[tuple(first)] = 127.0
    return x


@pytest.mark.parametrize(
    "dims, lhs_shape, rhs_shape, lhs_axis, rhs_axis",
    [(DENSE, (2, 5, 16), (16, 8), 2, 0), (ATTENTION, (2, 3, 5, 8), (2, 3, 7, 8), 3, 3)],
)
def test_int8_product_is_exact_when_operands_are_int8_values(
    dims, lhs_shape, rhs_shape, lhs_axis, rhs_axis
):
    rng = np.random.default_rng(0)
    lhs = _integers_with_full_range(rng, lhs_shape, lhs_axis)
    rhs = _integers_with_full_range(rng, rhs_shape, rhs_axis)
    expected = jax.lax.dot_general(
        lhs.astype(np.int64), rhs.astype(np.int64), dims, preferred_element_type=jnp.int32
    )
    out = int8_dot_general(jnp.asarray(lhs), jnp.asarray(rhs), dims)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected, np.float32))


@pytest.mark.parametrize(
    "dims, lhs_shape, rhs_shape",
    [(DENSE, (2, 6, 64), (64, 32)), (ATTENTION, (2, 2, 6, 16), (2, 2, 9, 16))],
)
def test_int8_product_is_close_to_float(dims, lhs_shape, rhs_shape):
    rng = np.random.default_rng(1)
    lhs = jnp.asarray(rng.standard_normal(lhs_shape), jnp.float32)
    rhs = jnp.asarray(rng.standard_normal(rhs_shape), jnp.float32)
    exact = jax.lax.dot_general(lhs, rhs, dims)
    out = int8_dot_general(lhs, rhs, dims)
    assert out.shape == exact.shape
    # The worst error is a few % of the outputs' spread (measured 3.5 % here).
    assert float(jnp.abs(out - exact).max()) < 0.06 * float(exact.std())
    # One scale per row: an outlier row (token) leaves the other rows' precision alone,
    # where a per-tensor scale would round them all to zero.
    outlier = lhs.at[(0,) * (lhs.ndim - 1)].multiply(1e4)
    out = int8_dot_general(outlier, rhs, dims)
    rest = (slice(1, None),)
    assert float(jnp.abs(out[rest] - exact[rest]).max()) < 0.06 * float(exact.std())


def test_the_compiled_product_is_an_int8_dot():
    lhs, rhs = jnp.ones((4, 8, 16)), jnp.ones((16, 32))
    hlo = jax.jit(lambda a, b: int8_dot_general(a, b, DENSE)).lower(lhs, rhs).as_text()
    assert "xi8>" in hlo and "xi32>" in hlo  # s8 operands, s32 accumulation (StableHLO)


INT8_DOT = re.compile(r"stablehlo.dot_general .*: \(tensor<[0-9x]+xi8>, tensor<[0-9x]+xi8>\)")
# An int8 product is XLA's int8 dot or, where it fits, the VNNI kernel's custom call.
INT8_KERNEL = re.compile(r"custom_call @bertjax_int8_dense")
# Matmuls of a 2-layer classifier: 6 Dense and 2 attention products a layer, pooler,
# classifier, with int8 attention products (INT8_PRODUCTS sees each Dense on its own).
PRODUCTS = 2 * 8 + 2
# Stored int8 Dense kernels, float attention: q, k and v run as one product (SelfAttention
# fuses them), so 4 int8 products a layer.
DENSE_PRODUCTS = 2 * 4 + 2


# Lowered for several devices, a kernel call is inside a `custom_partitioning` call until
# XLA partitions it: counted then, in one device's compiled program.
COMPILED_KERNEL = re.compile(r'custom_call_target="bertjax_int8_dense')


def _int8_dots(lowered) -> int:
    """How many int8 x int8 products a lowered function has."""
    text = lowered.as_text()
    if "@CustomSPMDPartitioning" in text:
        kernels = len(COMPILED_KERNEL.findall(lowered.compile().as_text()))
    else:
        kernels = len(INT8_KERNEL.findall(text))
    return len(INT8_DOT.findall(text)) + kernels


def _differs(logits, fp32) -> bool:
    """Whether `logits` differ from float ones by int8 rounding (>> float rounding, 1e-7)."""
    return float(np.abs(np.asarray(logits) - np.asarray(fp32)).max()) > 1e-3 * float(
        np.abs(np.asarray(fp32)).max()
    )


def _explicit_logits(model, params, inputs, matmul):
    """The model's logits with every matmul run by `matmul` (None: float)."""
    args = (inputs[k] for k in steps.MODEL_INPUTS)
    outputs, _ = model.apply({"params": params}, *args, interventions=Interventions(matmul=matmul))
    return outputs["logits"]


def test_int8_matmul_evaluates_stored_int8_weights_and_trains_in_float():
    config = models.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32,
    )  # fmt: skip
    model, params = models.build(config, "classification")
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 64, (2, 7)), jnp.int32)
    inputs = {"input_ids": ids, "attention_mask": jnp.ones_like(ids)}
    inputs["token_type_ids"] = jnp.zeros_like(ids)
    stored = storage.quantize_params(params, storage.DEFAULT_SELECT)
    fp32 = jax.jit(lambda p: _explicit_logits(model, p, inputs, None))(params)
    for method, dots in ((Int8Matmul(), DENSE_PRODUCTS), (Int8Matmul(attention=True), PRODUCTS)):
        assert method.present(params, {}, 0, True)[1].matmul is None
        seen, interventions = method.present(params, {}, 0, False)
        assert interventions.matmul is (INT8_PRODUCTS if method.attention else None)
        assert seen["bert"]["encoder"]["layer"]["0"]["output"]["dense"]["kernel"][
            "qvalue"
        ].dtype == (jnp.int8)
        eval_step = steps.make_eval_step(model, method=method)
        assert _int8_dots(eval_step.lower(params, {}, inputs)) == dots
        train_forward = jax.jit(
            lambda p, m=method: steps.forward(model, m, p, {}, 0, inputs, train=True)[0]["logits"]
        )
        assert _int8_dots(train_forward.lower(params)) == 0  # training steps stay float
        logits = eval_step(params, {}, inputs)
        expected = jax.jit(lambda p, m=interventions.matmul: _explicit_logits(model, p, inputs, m))(
            stored
        )
        np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-6)
        assert _differs(logits, fp32)


def test_ptq_int8_run_evaluates_with_int8_and_refuses_other_bit_widths(
    tmp_path, shrink, monkeypatch
):
    config = shrink(quant_ptq.get_config("model=tiny,task=mrpc,smoke=True,int8=True"))
    calls = []
    evaluate = evaluation.evaluate

    def recording(eval_step, state, encoded, task, batch_size, mesh):
        metrics, logits = evaluate(eval_step, state, encoded, task, batch_size, mesh)
        calls.append(dict(eval_step=eval_step, state=state, encoded=encoded, logits=logits))
        return metrics, logits

    monkeypatch.setattr(evaluation, "evaluate", recording)
    results = loop.train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["method"] == "quant_ptq_int8_dynamic" and saved["int8_matmuls"] is True
    assert results["steps"] == 0 and set(results["metrics"]) == {"accuracy", "f1"}
    # The run evaluated exactly what it exported: the stored-int8 artifact, run as loaded.
    (call,) = calls
    model, params = models.load_pretrained(tmp_path / "export", head="classification")
    kernel = params["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
    assert kernel["qvalue"].dtype == jnp.int8
    _, fp32_params = models.load_pretrained(tmp_path / "export_fp32", head="classification")
    mesh = mesh_lib.make_mesh()

    def predict(p):
        step = jax.jit(lambda p, _, inputs: _explicit_logits(model, p, inputs, None))
        return evaluation.predict(step, p, None, call["encoded"], 8, mesh)

    np.testing.assert_allclose(call["logits"], predict(params), rtol=1e-5, atol=1e-6)
    assert _differs(call["logits"], predict(fp32_params))
    assert results["bytes"] < 0.3 * 4 * results["params"]  # int8 storage, not fp32
    state = call["state"]
    inputs = {k: jnp.zeros((8, 32), jnp.int32) for k in steps.MODEL_INPUTS}
    lowered = call["eval_step"].lower(state.params, state.method_state, inputs)
    assert _int8_dots(lowered) == DENSE_PRODUCTS  # tiny: 2 layers, attention in float
    with pytest.raises(ValueError, match="W8A8"):
        quant_ptq.get_config("task=mrpc,int8=True,wbits=4")
