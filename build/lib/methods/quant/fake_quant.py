"""Uniform fake quantization (quantize then dequantize) and the STE, written once.

`fake_quant(x, spec)` rounds `x` onto a `bits`-bit grid and maps it back to
floats; `straight_through(x, q)` passes `q` forward and the identity gradient
backward: `x + stop_gradient(q - x)` (Bengio et al. 2013; Q8BERT's QAT).
Ranges are min/max of the tensor, over all of it (per-tensor) or per slice
along `channel_axis` (per-channel, e.g. a Dense kernel's output axis).
"""

import dataclasses

import jax
import jax.numpy as jnp

from methods.ste import straight_through  # noqa: F401  (re-exported)


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """`bits` in 2..8; symmetric grids are centred on 0 with [-(2^(b-1)-1), 2^(b-1)-1]."""

    bits: int = 8
    symmetric: bool = True
    per_channel: bool = False
    channel_axis: int = -1

    def __post_init__(self):
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be in 2..8, got {self.bits}")


def _reduce_axes(x: jax.Array, spec: QuantSpec) -> tuple[int, ...] | None:
    if not spec.per_channel or x.ndim == 0:
        return None
    channel = spec.channel_axis % x.ndim
    return tuple(a for a in range(x.ndim) if a != channel)


def scale_and_zero_point(x: jax.Array, spec: QuantSpec, lo=None, hi=None):
    """Grid step and integer zero point from the range [lo, hi] (default: x's min/max)."""
    axes = _reduce_axes(x, spec)
    lo = jnp.min(x, axis=axes, keepdims=True) if lo is None else lo
    hi = jnp.max(x, axis=axes, keepdims=True) if hi is None else hi
    tiny = jnp.finfo(jnp.float32).tiny
    if spec.symmetric:
        qmax = 2 ** (spec.bits - 1) - 1
        scale = jnp.maximum(jnp.maximum(jnp.abs(lo), jnp.abs(hi)) / qmax, tiny)
        return scale, jnp.zeros_like(scale)
    lo, hi = jnp.minimum(lo, 0.0), jnp.maximum(hi, 0.0)  # 0 must be exact
    scale = jnp.maximum((hi - lo) / (2**spec.bits - 1), tiny)
    return scale, jnp.round(-lo / scale)


def quantize(x: jax.Array, scale, zero_point, spec: QuantSpec) -> jax.Array:
    """Integer codes (as floats) of `x` on the grid, clipped to the grid's range."""
    if spec.symmetric:
        qmax = 2 ** (spec.bits - 1) - 1
        return jnp.clip(jnp.round(x / scale), -qmax, qmax)
    return jnp.clip(jnp.round(x / scale) + zero_point, 0, 2**spec.bits - 1)


def fake_quant(x: jax.Array, spec: QuantSpec, lo=None, hi=None) -> jax.Array:
    """Quantize-dequantize `x` (no gradient trick; see `straight_through`)."""
    scale, zero_point = scale_and_zero_point(x, spec, lo, hi)
    codes = quantize(x, scale, zero_point, spec)
    return ((codes - zero_point) * scale).astype(x.dtype)
