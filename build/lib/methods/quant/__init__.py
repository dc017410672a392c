"""Quantization: fake-quant with a straight-through estimator, weights and activations,
and real int8 matmuls. `from_config` builds the `config.quant` block's method."""

import dataclasses

from methods.base import Composed, Context, Method
from methods.quant.activations import ActivationQuantization, DynamicRanges, StaticRanges
from methods.quant.fake_quant import QuantSpec, fake_quant
from methods.quant.int8 import INT8_PRODUCTS, Int8Matmul, int8_dot_general
from methods.quant.storage import dequantize_params, quantize_params
from methods.quant.weights import WeightQuantization
from methods.ste import straight_through


@dataclasses.dataclass(frozen=True)
class Quantization(Composed):
    """Weight and activation quantization as one method, named as results.json says it."""

    label: str = "quant"

    @property
    def name(self) -> str:
        return self.label


def from_config(block, context: Context) -> Method:
    """The `config.quant` block's method: fake-quant weights and/or activations (QAT when
    the run trains, PTQ when it does not), or int8 storage and matmuls (`int8=True`;
    `int8_activations` "dynamic" or "static" (calibrated), `int8_attention`)."""
    wbits, abits = block.weight_bits, block.activation_bits
    kind = "qat" if context.trains else "ptq"
    if block.get("int8", False):
        if (wbits, abits) != (8, 8):
            raise ValueError(
                f"quant.int8=True runs W8A8; got weight_bits={wbits}, activation_bits={abits}"
            )
        activations = block.get("int8_activations", "dynamic")
        static = activations == "static"
        method = Int8Matmul(
            activations=activations,
            attention=bool(block.get("int8_attention", False)),
            calibration=block.get("calibration", "") or "minmax",
            num_calibration_batches=block.get("calibration_batches", 0) if static else 0,
            percentile=block.get("calibration_percentile", 99.99),
        )
        label = f"quant_{kind}_int8_{activations}"
        label += f"_{method.calibration}" if static else ""
        label += "_attn8" if method.attention else ""
        return Quantization((method,), label=label)
    parts: list[Method] = []
    if wbits:
        spec = QuantSpec(
            wbits, symmetric=block.weight_symmetric, per_channel=block.weight_per_channel
        )
        parts.append(WeightQuantization(spec))
    calibration = block.get("calibration", "")
    if abits:
        parts.append(
            ActivationQuantization(
                QuantSpec(abits, symmetric=block.activation_symmetric),
                ranges=block.get("activation_ranges", "dynamic"),
                ema_decay=block.get("ema_decay", 0.9999),
                calibration=calibration,
                num_calibration_batches=block.get("calibration_batches", 0) if calibration else 0,
                percentile=block.get("calibration_percentile", 99.99),
            )
        )
    suffix = f"_{calibration}" if kind == "ptq" and calibration else ""
    label = f"quant_{kind}_w{wbits}a{abits}{suffix}"
    return Quantization(tuple(parts), label=label)


__all__ = [
    "INT8_PRODUCTS",
    "ActivationQuantization",
    "DynamicRanges",
    "Int8Matmul",
    "QuantSpec",
    "Quantization",
    "StaticRanges",
    "WeightQuantization",
    "dequantize_params",
    "fake_quant",
    "from_config",
    "int8_dot_general",
    "quantize_params",
    "straight_through",
]
