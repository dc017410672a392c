"""Quantization: fake-quant with a straight-through estimator, weights and activations."""

from methods.quant.activations import ActivationQuantization, quantized_dot_general
from methods.quant.fake_quant import QuantSpec, fake_quant
from methods.quant.int8 import Int8Matmul, int8_dot_general
from methods.quant.weights import WeightQuantization
from methods.ste import straight_through

__all__ = [
    "ActivationQuantization",
    "Int8Matmul",
    "QuantSpec",
    "WeightQuantization",
    "fake_quant",
    "int8_dot_general",
    "quantized_dot_general",
    "straight_through",
]
