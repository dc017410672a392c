"""The task's per-example loss and the padding-aware mean, written once.

The train step's task loss (`bertjax/train/steps.py`), the exit heads' losses (early
exit), TR-BERT's reward and logit KD all use these: `methods/` may not import
`bertjax.train`, so the shared arithmetic lives here.
"""

import jax
import jax.numpy as jnp
import optax


def per_example(logits: jax.Array, labels: jax.Array, regression: bool) -> jax.Array:
    """[B]: cross-entropy of integer `labels` under `logits` [B, C], or the squared
    error of `logits[:, 0]` for regression; float32 whatever the logits' dtype."""
    logits = logits.astype(jnp.float32)
    if regression:
        return jnp.square(logits[:, 0] - labels)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean of `values` [B] over the rows with weight 1 (padding rows have weight 0)."""
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)
