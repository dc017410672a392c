"""Attention from the fused q|k|v projection, on our CPU kernel where it runs.

`attention(qkv, bias, heads, qkv_bias)`: the context [B, T, N*D] of
softmax(q . k / sqrt(D) + bias) . v for `qkv + qkv_bias` ([B, T, 3*N*D] + [3*N*D]: the
projection and its bias, added as the kernel reads them) and the additive key bias
[B, T]. On CPU with AVX-512 (and D % 16 == 0) it is `bertjax.kernels.attention`,
which reads q, k, v in place and never writes the [B, N, T, T] scores; elsewhere
`xla_attention`, the same in jnp. Both are float32.
The backward pass is `xla_attention`'s (the kernel has none), so gradients through a
deterministic forward still work.

The model uses it at inference when nothing needs the scores or probabilities themselves
(no head mask, a matmul that runs attention in float32 without looking at its operands:
`Matmul.fused_attention`), in `bert.SelfAttention`. Attention alone (6 heads, batch 32,
seq 128): 4.0 ms against XLA's 28; the whole int8 forward: 1.12-1.19x
(benchmarks/results/runtime.md, session 14).
"""

import functools

import jax
import jax.numpy as jnp

from bertjax import kernels

Array = jax.Array


def xla_attention(qkv: Array, bias: Array, heads: int, qkv_bias: Array) -> Array:
    """`attention` in jnp (what XLA runs off the kernel, and the backward pass)."""
    b, t, width = qkv.shape
    d = width // (3 * heads)
    qkv = (qkv + qkv_bias).astype(jnp.float32)
    q, k, v = (y.reshape(b, t, heads, d) for y in jnp.split(qkv, 3, axis=-1))
    scores = jnp.einsum("bthd,bshd->bhts", q * (1 / jnp.sqrt(d)).astype(q.dtype), k)
    probs = jax.nn.softmax(scores + bias[:, None, None, :].astype(jnp.float32), axis=-1)
    return jnp.einsum("bhts,bshd->bthd", probs, v).reshape(b, t, width // 3)


def supports(head_dim: int) -> bool:
    """Whether the CPU kernel takes heads of `head_dim` on this machine."""
    return kernels.supports_attention(head_dim)


def attention(qkv: Array, bias: Array, heads: int, qkv_bias: Array | None = None) -> Array:
    """See the module doc (`qkv_bias` None: zeros)."""
    if qkv_bias is None:
        qkv_bias = jnp.zeros(qkv.shape[-1:], jnp.float32)
    return _attention(qkv, bias, heads, qkv_bias)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _attention(qkv: Array, bias: Array, heads: int, qkv_bias: Array) -> Array:
    if not supports(qkv.shape[-1] // (3 * heads)):
        return xla_attention(qkv, bias, heads, qkv_bias)
    return jax.lax.platform_dependent(
        qkv, bias, qkv_bias,
        cpu=functools.partial(_kernel, heads=heads),
        default=lambda qkv, bias, qkv_bias: xla_attention(qkv, bias, heads, qkv_bias),
    )  # fmt: skip


def _kernel(qkv, bias, qkv_bias, heads):
    return kernels.attention(qkv, bias, heads, qkv_bias)


def _forward(qkv, bias, heads, qkv_bias):
    return _attention(qkv, bias, heads, qkv_bias), (qkv, bias, qkv_bias)


def _backward(heads, residuals, grad):
    qkv, bias, qkv_bias = residuals
    _, vjp = jax.vjp(lambda a, b, c: xla_attention(a, b, heads, c), qkv, bias, qkv_bias)
    return vjp(grad)


_attention.defvjp(_forward, _backward)
