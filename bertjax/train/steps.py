"""The jitted train and eval steps: pure functions of (state, batch).

Losses are weighted means over `batch["weights"]`, so padded rows (weight 0)
that fill the last batch change nothing, and a batch split over any number
of devices gives the same result.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from bertjax.train.state import TrainState

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def task_loss(
    logits: jax.Array, labels: jax.Array, weights: jax.Array, regression: bool
) -> jax.Array:
    """Weighted mean cross-entropy (classification) or squared error (regression)."""
    if regression:
        per_example = jnp.square(logits[:, 0].astype(jnp.float32) - labels)
    else:
        per_example = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), labels
        )
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def train_step_fn(model, *, regression: bool) -> Callable:
    """The pure `train_step(state, batch) -> (state, metrics)`, not yet jitted."""

    def train_step(state: TrainState, batch: dict):
        dropout_rng = state.step_rng()

        def loss_fn(params):
            outputs, _ = model.apply(
                {"params": params},
                *(batch[k] for k in MODEL_INPUTS),
                deterministic=False,
                rngs={"dropout": dropout_rng},
            )
            return task_loss(outputs["logits"], batch["labels"], batch["weights"], regression)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_train_step(model, *, regression: bool, donate: bool = True) -> Callable:
    """`train_step_fn` jitted, with the state donated (updated in place)."""
    return jax.jit(
        train_step_fn(model, regression=regression), donate_argnums=(0,) if donate else ()
    )


def make_eval_step(model, *, regression: bool) -> Callable:
    """`eval_step(params, batch) -> predictions` (class ids, or scores for regression)."""

    def eval_step(params, batch: dict):
        outputs, _ = model.apply({"params": params}, *(batch[k] for k in MODEL_INPUTS))
        logits = outputs["logits"]
        return logits[:, 0] if regression else jnp.argmax(logits, axis=-1)

    return jax.jit(eval_step)
