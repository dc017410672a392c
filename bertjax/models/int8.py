"""Products of stored-int8 Dense kernels (`{qvalue: int8 [in, out], scale: f32 [out]
[, input_scale]}`, see `methods/quant/storage.py`), as pure functions.

Two arithmetics, chosen by the matmul intervention (`Matmul.stored_int8`):
  `int8_dense`         W8A8: activations quantized (per token, or by a calibrated
                       `input_scale`), int8 x int8 with int32 accumulation
  `weight_only_dense`  W8A16: activations in bfloat16, the int8 values cast to bfloat16
                       (exact: |q| <= 127), float32 accumulation, then the weight scales
On this machine's CPU (AVX-512 BF16/VNNI, benchmarks/results/runtime.md) XLA's bf16 x bf16 -> f32
product runs at ~1.5x the int8 one, so W8A16 is both faster and closer to fp32.
"""

import jax
import jax.numpy as jnp

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


def _weight_scale(kernel: dict, ndim: int) -> Array:
    return jnp.asarray(kernel[convert.SCALE], jnp.float32).reshape((1,) * (ndim - 1) + (-1,))


def int8_dense(x: Array, kernel: dict) -> Array:
    """W8A8 `x @ kernel`: x quantized (dynamically per token, or statically by
    `input_scale`), int8 x int8 with int32 accumulation, rescaled by the outer product
    of the scales; float32."""
    x_q, x_scale = quantize_rows(x, kernel.get(convert.INPUT_SCALE))
    acc = jax.lax.dot_general(
        x_q, kernel[convert.QVALUE], _CONTRACT_LAST(x.ndim), preferred_element_type=jnp.int32
    )
    return acc.astype(jnp.float32) * (x_scale * _weight_scale(kernel, x.ndim))


def weight_only_dense(x: Array, kernel: dict) -> Array:
    """W8A16 `x @ kernel`: bfloat16 activations times the int8 values (as bfloat16),
    float32 accumulation, times the per-channel weight scales; float32. A calibrated
    `input_scale` is not used (activations are not quantized)."""
    acc = bfloat16.product(x, kernel[convert.QVALUE], _CONTRACT_LAST(x.ndim))
    return acc * _weight_scale(kernel, x.ndim)
