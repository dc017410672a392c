"""Real int8 matmuls: exact on int8-representable operands, close otherwise, s8 in the HLO."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax.train import loop
from configs import quant_ptq
from methods.quant import Int8Matmul, int8_dot_general

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


def test_int8_matmul_overrides_evaluation_only():
    method = Int8Matmul()
    assert method.overrides(None) == {}
    assert method.eval_overrides(None)["dot_general"] is int8_dot_general


def test_ptq_int8_run_evaluates_with_int8_and_refuses_other_bit_widths(tmp_path, shrink):
    config = shrink(quant_ptq.get_config("model=tiny,task=mrpc,smoke=True,int8=True"))
    results = loop.train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["method"] == "quant_ptq_int8_dynamic" and saved["int8_matmuls"] is True
    assert results["steps"] == 0 and set(results["metrics"]) == {"accuracy", "f1"}
    with pytest.raises(ValueError, match="W8A8"):
        quant_ptq.get_config("task=mrpc,int8=True,wbits=4")
