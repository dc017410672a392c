"""Activation fake-quantization through the model's injectable `dot_general`.

Every matmul of the model (each Dense layer and both attention products) calls
the injected function; it fake-quantizes the left operand (the activation) and,
for matmuls with batch dimensions (attention: q.k and probs.v, both
activations), the right operand too. A Dense kernel (no batch dimensions) is a
weight and is left to `WeightQuantization`. Ranges are dynamic: each tensor's
own min/max at run time (as ONNX Runtime's dynamic int8). Static ranges (EMA
QAT, PTQ calibration) are not implemented yet.
"""

import dataclasses

import jax

from methods.base import Method
from methods.quant.fake_quant import QuantSpec, fake_quant
from methods.ste import straight_through


def quantized_dot_general(spec: QuantSpec):
    """A `jax.lax.dot_general` replacement that fake-quantizes activation operands."""

    def quantize(x):
        return straight_through(x, fake_quant(x, spec))

    def dot_general(
        lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs
    ):
        (_, _), (lhs_batch, _) = dimension_numbers
        rhs = quantize(rhs) if lhs_batch else rhs
        return jax.lax.dot_general(
            quantize(lhs),
            rhs,
            dimension_numbers,
            precision=precision,
            preferred_element_type=preferred_element_type,
            **kwargs,
        )

    return dot_general


@dataclasses.dataclass(frozen=True)
class ActivationQuantization(Method):
    spec: QuantSpec = QuantSpec(8, symmetric=False)

    def overrides(self, state):
        return {"dot_general": quantized_dot_general(self.spec)}

    def report(self, params, state):
        return {"activation_bits": self.spec.bits}
