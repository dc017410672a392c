"""The straight-through estimator, written once for quantization and pruning."""

import jax


def straight_through(x: jax.Array, forward: jax.Array) -> jax.Array:
    """`forward` in the forward pass, identity gradient to `x` in the backward pass:
    `x + stop_gradient(forward - x)` (Bengio et al. 2013)."""
    return x + jax.lax.stop_gradient(forward - x)
