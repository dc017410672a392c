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
from methods.base import Method

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


def train_step_fn(
    model, *, regression: bool, method: Method | None = None, teacher=None
) -> Callable:
    """The pure `train_step(state, batch[, teacher_params]) -> (state, metrics)`, not jitted.

    The compression `method` decides what the model sees (`forward_params`,
    `overrides`), adds loss terms, folds in what its overrides observed
    (`observe`, e.g. activation ranges), and updates its state after the gradient;
    gradients flow to the raw `state.params` (straight through any mask).
    With a `teacher` model, its params are an argument of the step, held under
    `stop_gradient`, and `method.loss` receives the teacher's `(outputs, inter)`.
    `teacher="cached"`: the teacher's logits come as `batch["teacher_logits"]` (no
    intermediates), e.g. from `bertjax.train.teacher.cached_logits`.
    """
    method = method or Method()
    collect = method.intermediates()

    def train_step(state: TrainState, batch: dict, teacher_params=None):
        dropout_rng = state.step_rng()
        inputs = tuple(batch[k] for k in MODEL_INPUTS)
        teacher_view = None
        if isinstance(teacher, str):  # "cached": the teacher's logits come with the batch
            teacher_view = ({"logits": batch["teacher_logits"]}, {})
        elif teacher is not None:
            teacher_view = teacher.apply(
                {"params": jax.lax.stop_gradient(teacher_params)}, *inputs, collect=collect
            )

        def loss_fn(params):
            seen = method.forward_params(params, state.method_state)
            overrides = method.overrides(state.method_state)
            outputs, inter = model.apply(
                {"params": seen},
                *inputs,
                deterministic=False,
                rngs={"dropout": dropout_rng},
                collect=collect,
                **overrides,
            )
            loss = task_loss(outputs["logits"], batch["labels"], batch["weights"], regression)
            extra, extra_metrics = method.loss(
                (outputs, inter), teacher_view, batch, state.method_state, params
            )
            total = method.hard_loss_weight() * loss + extra
            # What the overrides recorded during this trace (e.g. activation ranges).
            observed = method.observed(overrides)
            return total, ({"task_loss": loss, **extra_metrics}, observed)

        (loss, (aux, observed)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        method_state = method.observe(state.method_state, jax.lax.stop_gradient(observed))
        method_state = method.observe_loss(method_state, jax.lax.stop_gradient(aux))
        method_state = method.update(params, grads, method_state, state.step + 1)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, method_state=method_state
        )
        return new_state, metrics

    return train_step


def make_train_step(
    model, *, regression: bool, method: Method | None = None, teacher=None, donate: bool = True
) -> Callable:
    """`train_step_fn` jitted, with the state donated (updated in place)."""
    return jax.jit(
        train_step_fn(model, regression=regression, method=method, teacher=teacher),
        donate_argnums=(0,) if donate else (),
    )


def make_eval_step(model, *, method: Method | None = None) -> Callable:
    """`eval_step(params, method_state, batch) -> logits` [B, labels] in float32."""
    method = method or Method()

    def eval_step(params, method_state, batch: dict):
        seen = method.forward_params(params, method_state)
        outputs, _ = model.apply(
            {"params": seen},
            *(batch[k] for k in MODEL_INPUTS),
            **method.eval_overrides(method_state),
        )
        return outputs["logits"].astype(jnp.float32)

    return jax.jit(eval_step)
