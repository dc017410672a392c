"""Products of stored-int8 Dense kernels (`{qvalue: int8 [in, out], scale: f32 [out]
[, input_scale]}`, see `methods/quant/storage.py`), as pure functions.

Two arithmetics, chosen by the matmul intervention (`Matmul.stored_int8`):
  `int8_dense`         W8A8: activations quantized (per token, or by a calibrated
                       `input_scale`), int8 x int8 with int32 accumulation
  `weight_only_dense`  W8A16: activations in bfloat16, the int8 values cast to bfloat16
                       (exact: |q| <= 127), float32 accumulation, then the weight scales
On this machine's CPU (AVX-512 BF16/VNNI, benchmarks/results/runtime.md) XLA's bf16 x bf16 -> f32
product runs at ~1.5x XLA's int8 one; W8A8 therefore runs on our own VNNI kernel
(`bertjax/kernels`) where it can, at ~2x the bf16 product.
"""

import functools

import jax
import jax.numpy as jnp

from bertjax import kernels
from bertjax.models import bfloat16, convert

Array = jax.Array
_CONTRACT_LAST = lambda ndim: (((ndim - 1,), (0,)), ((), ()))  # noqa: E731


def quantize_rows(x: Array, input_scale: Array | None) -> tuple[Array, Array]:
    """`(x_int8, scale)` with x ~= x_int8 * scale on the symmetric int8 grid [-127, 127]:
    one scale per row (token) from its absolute maximum, or the static (calibrated)
    per-tensor `input_scale`, clipping beyond it."""
    x = x.astype(jnp.float32)
    if input_scale is None:
        absmax = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
        scale = jnp.maximum(absmax / 127, jnp.finfo(jnp.float32).tiny)
    else:
        scale = jnp.asarray(input_scale, jnp.float32).reshape((1,) * x.ndim)
    return jnp.clip(jnp.round(x / scale), -127, 127).astype(jnp.int8), scale


def _weight_scale(scale: Array, ndim: int) -> Array:
    return jnp.asarray(scale, jnp.float32).reshape((1,) * (ndim - 1) + (-1,))


def int8_dense(x: Array, kernel: dict) -> Array:
    """W8A8 `x @ kernel`: x quantized (dynamically per token, or statically by
    `input_scale`), int8 x int8 with int32 accumulation, rescaled by the outer product
    of the scales; float32. On a CPU with AVX-512 VNNI, dynamic scales run as
    `bertjax.kernels.int8_dense` (the same formula; ~2x XLA's bf16 product), elsewhere
    as XLA's int8 product."""
    qvalue, input_scale = kernel[convert.QVALUE], kernel.get(convert.INPUT_SCALE)
    if _fits_kernel(kernel):
        scale = kernel[convert.SCALE]
        return jax.lax.platform_dependent(
            x, qvalue, scale, cpu=kernels.int8_dense, default=_xla_int8_dense
        )
    return _xla_int8_dense(x, qvalue, kernel[convert.SCALE], input_scale)


def _fits_kernel(kernel: dict) -> bool:
    """Whether the VNNI kernel runs this stored kernel: dynamic activation scales, a 2-D
    kernel of shapes it takes, a CPU that has it."""
    qvalue = kernel[convert.QVALUE]
    return (kernel.get(convert.INPUT_SCALE) is None and qvalue.ndim == 2
            and kernels.supports(*qvalue.shape))  # fmt: skip


def _xla_int8_dense(x: Array, qvalue: Array, scale: Array, input_scale=None) -> Array:
    x_q, x_scale = quantize_rows(x, input_scale)
    acc = jax.lax.dot_general(x_q, qvalue, _CONTRACT_LAST(x.ndim), preferred_element_type=jnp.int32)
    return acc.astype(jnp.float32) * (x_scale * _weight_scale(scale, x.ndim))


def int8_dense_norm(x, kernel: dict, bias, residual, norm: dict, eps: float) -> Array | None:
    """LayerNorm(`int8_dense(x, kernel)` + bias + residual) (LayerNorm params `norm`:
    `scale`, `bias`) as one op on a CPU where the VNNI kernel fits: the sum and the
    LayerNorm run on each tile of rows while it is in cache (`kernels.int8_dense_norm`);
    XLA's composition elsewhere. None where the kernel never fits (a calibrated
    `input_scale`, unsupported shapes): the caller runs the parts."""
    if not _fits_kernel(kernel):
        return None
    qvalue, scale = kernel[convert.QVALUE], kernel[convert.SCALE]
    operands = (x, qvalue, scale, bias, residual, norm["scale"], norm["bias"])
    return jax.lax.platform_dependent(
        *operands,
        cpu=functools.partial(kernels.int8_dense_norm, eps=eps),
        default=functools.partial(_xla_int8_dense_norm, eps=eps),
    )


def _xla_int8_dense_norm(x, qvalue, scale, bias, residual, gamma, beta, eps):
    y = _xla_int8_dense(x, qvalue, scale) + bias + residual
    mean = jnp.mean(y, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(y - mean), axis=-1, keepdims=True)
    return (y - mean) * (jax.lax.rsqrt(variance + eps) * gamma) + beta


def weight_only_dense(x: Array, kernel: dict) -> Array:
    """W8A16 `x @ kernel`: bfloat16 activations times the int8 values (as bfloat16),
    float32 accumulation, times the per-channel weight scales; float32. A calibrated
    `input_scale` is not used (activations are not quantized)."""
    acc = bfloat16.product(x, kernel[convert.QVALUE], _CONTRACT_LAST(x.ndim))
    return acc * _weight_scale(kernel[convert.SCALE], x.ndim)
