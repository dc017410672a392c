"""Real int8 matmuls: int8 x int8 -> int32 `dot_general`, dynamic symmetric scales.

Fake-quant (`fake_quant.py`) simulates int8 in float; this runs it. Each
operand is scaled onto [-127, 127] by its own absolute maximum over the
contracted dimensions (one scale per row of the left operand, per column of
the right one: a Dense kernel gets per-output-channel scales, an activation
per-token scales, as ONNX Runtime's dynamic int8 and LLM.int8's vector-wise
quantization do), rounded to int8, multiplied with int32 accumulation, and
the int32 result rescaled to float by the outer product of the two scales.
XLA:CPU lowers the int8 product to oneDNN/YNNPACK kernels (VNNI/AMX where
the CPU has them), which is where the speed comes from.

Inference only: rounding has no useful gradient, so `Int8Matmul` sets the
override for evaluation and export-time measurement, not for training steps.
Weights stay float in the params (quantized on the fly each call, a small
cost next to the activations at batch 32 x 128); storing them as int8 is not
done here.
"""

import dataclasses

import jax
import jax.numpy as jnp

from methods.base import Method
from methods.quant.fake_quant import QuantSpec, quantize, scale_and_zero_point

INT8 = QuantSpec(8, symmetric=True)  # the fake-quant grid: [-127, 127], step absmax / 127


def quantize_along(x: jax.Array, axes: tuple[int, ...]):
    """`(x_int8, scale)`: x ~= x_int8 * scale, one scale per slice over `axes` (kept as 1s)."""
    x = x.astype(jnp.float32)
    absmax = jnp.max(jnp.abs(x), axis=axes, keepdims=True)
    scale, zero_point = scale_and_zero_point(x, INT8, lo=-absmax, hi=absmax)
    return quantize(x, scale, zero_point, INT8).astype(jnp.int8), scale


def int8_dot_general(
    lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs
):
    """A `jax.lax.dot_general` replacement computing the product in int8 (see module doc).

    Returns float32 (or `preferred_element_type` when it is a float type).
    """
    del precision, kwargs  # the int8 product has one precision
    (lhs_contract, rhs_contract), _ = dimension_numbers
    lhs_q, lhs_scale = quantize_along(lhs, tuple(lhs_contract))
    rhs_q, rhs_scale = quantize_along(rhs, tuple(rhs_contract))
    acc = jax.lax.dot_general(lhs_q, rhs_q, dimension_numbers, preferred_element_type=jnp.int32)
    # The scales keep the contracted dims as size 1, so the same dot_general lays
    # their outer product out exactly like the output.
    scale = jax.lax.dot_general(lhs_scale, rhs_scale, dimension_numbers)
    out_type = preferred_element_type or jnp.float32
    if not jnp.issubdtype(out_type, jnp.floating):
        out_type = jnp.float32
    return (acc.astype(jnp.float32) * scale).astype(out_type)


@dataclasses.dataclass(frozen=True)
class Int8Matmul(Method):
    """Evaluates with every matmul in real int8 (Dense layers and both attention products).

    Training steps stay float (no override), so with `train.num_epochs = 0` this
    is dynamic post-training quantization W8A8 that really runs in int8.
    """

    def eval_overrides(self, state):
        return {"dot_general": int8_dot_general}

    def report(self, params, state):
        return {"int8_matmuls": True}
