"""The VNNI int8 kernel: the exact integer product of `int8_dense`, where XLA would run it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import kernels
from bertjax.models import convert, int8

pytestmark = pytest.mark.skipif(not kernels.available(), reason="no AVX-512 VNNI kernel here")


# Full 6 x 64 tiles, row and column tails, K not a multiple of 16, one row.
@pytest.mark.parametrize(("m", "k", "n"), [(12, 64, 128), (13, 36, 80), (1, 384, 48), (7, 8, 16)])
def test_kernel_is_the_exact_integer_product(m, k, n):
    rng = np.random.default_rng(m + k + n)
    x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 5.0, (m, 1))).astype(np.float32)
    x[0, :3] = [0.5, -0.5, 1.5]  # exact halves of the grid: rounded to even
    x[min(1, m - 1)] = 0.0  # an all-zero row: scale = tiny, q = 0
    qvalue = rng.integers(-127, 128, (k, n)).astype(np.int8)
    scale = rng.uniform(1e-3, 2e-2, n).astype(np.float32)
    got = np.asarray(jax.jit(kernels.int8_dense)(x, qvalue, scale))
    np.testing.assert_array_equal(got, kernels.reference_int8_dense(x, qvalue, scale))
    # XLA's W8A8 product: the same up to an activation landing on the neighbouring
    # integer (XLA multiplies by 1/127), i.e. within one step of |w| * both scales.
    xla = np.asarray(int8._xla_int8_dense(jnp.asarray(x), qvalue, scale))
    step = 127 * (np.abs(x).max(-1, keepdims=True) / 127) * scale[None]
    assert np.all(np.abs(got - xla) <= 2 * step + 1e-6)


def test_int8_dense_uses_the_kernel_only_where_it_fits():
    x = jnp.ones((2, 5, 32))
    fits = {convert.QVALUE: jnp.ones((32, 48), jnp.int8), convert.SCALE: jnp.ones(48)}
    odd = {convert.QVALUE: jnp.ones((32, 2), jnp.int8), convert.SCALE: jnp.ones(2)}
    static = {**fits, convert.INPUT_SCALE: jnp.float32(0.1)}
    for kernel, calls in ((fits, 1), (odd, 0), (static, 0)):
        text = jax.jit(int8.int8_dense).lower(x, kernel).as_text()
        assert text.count(f"@{kernels.TARGET}") == calls
    assert jax.jit(int8.int8_dense)(x, fits).shape == (2, 5, 48)
    with pytest.raises(Exception, match="K % 4 == 0 and N % 16 == 0"):
        kernels.int8_dense(jnp.ones((3, 6)), jnp.ones((6, 16), jnp.int8), jnp.ones(16))


@pytest.mark.parametrize(("m", "k", "n"), [(13, 36, 80), (1, 64, 384)])
def test_kernel_residual_layer_norm_matches_the_reference_and_xla(m, k, n):
    rng = np.random.default_rng(m * n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    qvalue = rng.integers(-127, 128, (k, n)).astype(np.int8)
    scale, bias, gamma, beta = (rng.uniform(0.5, 1.5, n).astype(np.float32) * 0.01 for _ in "sbgb")
    residual = (rng.standard_normal((m, n)) * 3 + 1).astype(np.float32)
    args = (x, qvalue, scale, bias, residual, gamma, beta)
    got = np.asarray(jax.jit(kernels.int8_dense_norm, static_argnames="eps")(*args, eps=1e-12))
    np.testing.assert_allclose(got, kernels.reference_int8_dense_norm(*args, 1e-12), atol=2e-6)
    kernel = {convert.QVALUE: qvalue, convert.SCALE: scale}
    norm = {"scale": gamma, "bias": beta}
    fused = jax.jit(lambda *a: int8.int8_dense_norm(a[0], kernel, *a[1:], norm, 1e-12))
    assert f"@{kernels.NORM_TARGET}" in fused.lower(x, bias, residual).as_text()
    # Off CPU (platform_dependent's default): XLA's composition, the same up to where
    # XLA's own product rounds an activation to the neighbouring integer.
    xla = np.asarray(int8._xla_int8_dense_norm(*args, eps=1e-12))
    np.testing.assert_allclose(got, xla, atol=1e-3)
    np.testing.assert_allclose(np.asarray(fused(x, bias, residual)), got, atol=1e-6)
    static = {**kernel, convert.INPUT_SCALE: 0.1}
    assert int8.int8_dense_norm(x, static, bias, residual, norm, 1e-12) is None


def test_under_a_sharded_jit_each_device_runs_the_kernels_on_its_own_rows(batch_split):
    rows = batch_split
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2 * jax.device_count(), 5, 64)).astype(np.float32)
    residual = rng.standard_normal((*x.shape[:2], 96)).astype(np.float32)
    qvalue = rng.integers(-127, 128, (64, 96)).astype(np.int8)
    vector = rng.uniform(1e-3, 1e-2, 96).astype(np.float32)
    dense = jax.jit(kernels.int8_dense)
    norm = jax.jit(kernels.int8_dense_norm, static_argnames="eps")
    for fn, args, sharded in (
        (dense, (x, qvalue, vector), (0,)),
        (norm, (x, qvalue, vector, vector, residual, vector, vector), (0, 4)),
    ):
        placed = [jax.device_put(a, rows) if i in sharded else a for i, a in enumerate(args)]
        kwargs = {"eps": 1e-12} if fn is norm else {}
        compiled = fn.lower(*placed, **kwargs).compile().as_text()
        assert "all-gather" not in compiled and "all-to-all" not in compiled
        out = fn(*placed, **kwargs)
        assert out.sharding.spec[0] == "data"  # stays split: no gather before the next op
        np.testing.assert_array_equal(np.asarray(out), np.asarray(fn(*args, **kwargs)))
