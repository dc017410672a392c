"""bfloat16 products with float32 accumulation, forward and backward.

`dot_general(lhs, rhs, dimension_numbers)` casts both operands to bfloat16 and asks
XLA for a float32 result: on CPUs with AVX-512 BF16 (or AMX) that runs at ~2x a float32
product, whereas a bf16 x bf16 -> bf16 product is no faster than float32 on XLA:CPU
(benchmarks/results/runtime.md, "bf16"). JAX's own derivative of such a product multiplies the
float32 cotangent by the upcast operand, i.e. runs the backward in float32; for the
Dense shape (`x [..., K] @ w [K, N]`, 90 % of BERT's FLOPs) a custom VJP keeps both
backward products in bfloat16 with float32 results as well. Other shapes (the attention
products) take JAX's derivative.
"""

import jax
import jax.numpy as jnp

Array = jax.Array
BF16, F32 = jnp.bfloat16, jnp.float32


def product(lhs, rhs, dimension_numbers) -> Array:
    """`jax.lax.dot_general` of the operands cast to bfloat16, float32 result (no custom VJP)."""
    return jax.lax.dot_general(
        lhs.astype(BF16), rhs.astype(BF16), dimension_numbers, preferred_element_type=F32
    )


@jax.custom_vjp
def dense_product(x: Array, w: Array) -> Array:
    """`x @ w` (x [..., K], w [K, N]) in bfloat16 with float32 accumulation and output."""
    return product(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def _dense_fwd(x, w):
    x16, w16 = x.astype(BF16), w.astype(BF16)
    # Zero-size arrays carry the primal dtypes: cotangents come back in them.
    dtypes = (jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))
    return product(x16, w16, (((x.ndim - 1,), (0,)), ((), ()))), (x16, w16, dtypes)


def _dense_bwd(residuals, g):
    x16, w16, (x_dtype, w_dtype) = residuals
    g16 = g.astype(BF16)
    dx = product(g16, w16, (((g.ndim - 1,), (1,)), ((), ())))  # g @ w.T
    rows = g16.reshape(-1, g.shape[-1])
    dw = product(x16.reshape(-1, x16.shape[-1]), rows, (((0,), (0,)), ((), ())))  # x.T @ g
    return dx.astype(x_dtype.dtype), dw.astype(w_dtype.dtype)


dense_product.defvjp(_dense_fwd, _dense_bwd)


def is_dense(lhs, rhs, dimension_numbers) -> bool:
    """Whether a product is `x [..., K] @ w [K, N]`: last axis of lhs with axis 0 of a
    2-D rhs, no batch axes."""
    (lc, rc), (lb, rb) = dimension_numbers
    return (
        rhs.ndim == 2 and tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and not lb and not rb
    )


def dot_general(lhs, rhs, dimension_numbers) -> Array:
    """`jax.lax.dot_general` with bfloat16 operands and a float32 result (see the module
    doc); Dense-shaped products differentiate in bfloat16 too."""
    if is_dense(lhs, rhs, dimension_numbers):
        return dense_product(lhs, rhs)
    return product(lhs, rhs, dimension_numbers)
