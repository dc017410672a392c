"""Quantization: fake-quant with a straight-through estimator, weights and activations."""

from methods.quant.activations import ActivationQuantization, quantized_dot_general
from methods.quant.fake_quant import QuantSpec, fake_quant
from methods.quant.weights import WeightQuantization
from methods.ste import straight_through

__all__ = [
    "ActivationQuantization",
    "QuantSpec",
    "WeightQuantization",
    "fake_quant",
    "quantized_dot_general",
    "straight_through",
]
