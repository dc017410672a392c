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
