"""Quantization: fake-quant with a straight-through estimator (weights for now)."""

from methods.quant.fake_quant import QuantSpec, fake_quant
from methods.quant.weights import WeightQuantization
from methods.ste import straight_through

__all__ = ["QuantSpec", "WeightQuantization", "fake_quant", "straight_through"]
