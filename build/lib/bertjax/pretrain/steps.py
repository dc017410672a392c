"""Jitted steps of general distillation: a student, or a supernet of sampled architectures.

Params of a run: the student's encoder tree plus `distill/projection` (student width ->
teacher width; `methods.distill.tinybert.project`), which the model never sees.

  student step   TinyBERT general distillation (`general.layer_loss` over a layer map)
  supernet step  AutoTinyBERT's SuperPLM step: the masks of K sampled architectures
                 come as data ([K, ...] arrays, `submodel.mask_arrays` stacked), the
                 teacher runs once, and `lax.scan` accumulates the K architectures'
                 gradients into one update. The shapes never change, so the step
                 compiles once for every sample.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from bertjax.models import submodel
from bertjax.train.state import TrainState
from methods.distill import general
from methods.distill.tinybert import PARAMS_KEY

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
COLLECT = ("embeddings", "hidden", "attn_scores")


def model_params(params: dict) -> dict:
    """The params the model sees (the projection hidden)."""
    return {k: v for k, v in params.items() if k != PARAMS_KEY}


def apply_model(model, params, batch, *, rng=None, interventions=None, collect=COLLECT):
    """The intermediates of `model` on `batch` (params with the projection hidden)."""
    _, inter = model.apply(
        {"params": model_params(params)},
        *(batch[k] for k in MODEL_INPUTS),
        deterministic=rng is None,
        rngs={} if rng is None else {"dropout": rng},
        collect=collect,
        interventions=interventions,
    )
    return inter


def student_loss_fn(model, teacher, pairs, embedding) -> Callable:
    """`loss(params, teacher_params, batch, rng=None) -> (loss, metrics)`."""

    def loss(params, teacher_params, batch, rng=None):
        teacher_inter = apply_model(teacher, teacher_params, batch)
        student_inter = apply_model(model, params, batch, rng=rng)
        return general.layer_loss(student_inter, teacher_inter, batch, params, pairs, embedding)

    return loss


def supernet_loss_fn(model, teacher) -> Callable:
    """`loss(params, teacher_params, batch, masks, rng=None) -> (loss, metrics)`, for one
    architecture's `masks` (a `submodel.mask_arrays` dict, possibly traced)."""
    layers = teacher.config.num_hidden_layers

    def loss(params, teacher_inter, batch, masks, rng=None):
        inter = apply_model(
            model,
            params,
            batch,
            rng=rng,
            interventions=submodel.interventions_of(masks),
            collect=("hidden", "attn_scores"),
        )
        return general.supernet_loss(
            inter, teacher_inter, batch, params, masks["head_mask"], masks["layer_mask"], layers
        )

    return loss


def _update(state: TrainState, loss, grads, metrics):
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}


def make_student_step(model, teacher, pairs, embedding: bool = True) -> Callable:
    """Jitted `step(state, teacher_params, batch) -> (state, metrics)`, state donated."""
    loss_fn = student_loss_fn(model, teacher, pairs, embedding)

    def step(state: TrainState, teacher_params, batch):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, metrics), grads = grad_fn(state.params, teacher_params, batch, state.step_rng())
        return _update(state, loss, grads, metrics)

    return jax.jit(step, donate_argnums=(0,))


def supernet_step_fn(model, teacher) -> Callable:
    """The pure `step(state, teacher_params, batch, masks) -> (state, metrics)`; `masks`
    holds [K, ...] arrays: K architectures, their gradients averaged into one update."""
    loss_fn = supernet_loss_fn(model, teacher)

    def step(state: TrainState, teacher_params, batch, masks):
        teacher_inter = jax.lax.stop_gradient(
            apply_model(teacher, teacher_params, batch, collect=("hidden", "attn_scores"))
        )
        count = masks["layer_mask"].shape[0]
        rng = state.step_rng()

        def one(carry, inputs):
            k, arch_masks = inputs
            grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
            (loss, metrics), grads = grad_fn(
                state.params, teacher_inter, batch, arch_masks, jax.random.fold_in(rng, k)
            )
            total = jax.tree_util.tree_map(jnp.add, carry, (loss, metrics, grads))
            return total, None

        zero = jax.tree_util.tree_map(
            jnp.zeros_like,
            jax.eval_shape(
                lambda: jax.value_and_grad(loss_fn, has_aux=True)(
                    state.params,
                    teacher_inter,
                    batch,
                    jax.tree_util.tree_map(lambda m: m[0], masks),
                )
            ),
        )
        zero = (zero[0][0], zero[0][1], zero[1])
        (loss, metrics, grads), _ = jax.lax.scan(one, zero, (jnp.arange(count), masks))
        scale = 1.0 / count
        loss, metrics, grads = jax.tree_util.tree_map(lambda x: x * scale, (loss, metrics, grads))
        return _update(state, loss, grads, metrics)

    return step


def make_supernet_step(model, teacher) -> Callable:
    """`supernet_step_fn` jitted, state donated."""
    return jax.jit(supernet_step_fn(model, teacher), donate_argnums=(0,))


def make_student_eval(model, teacher, pairs, embedding: bool = True) -> Callable:
    """Jitted `eval(params, teacher_params, batch) -> metrics` (no dropout)."""
    loss_fn = student_loss_fn(model, teacher, pairs, embedding)

    def evaluate(params, teacher_params, batch):
        loss, metrics = loss_fn(params, teacher_params, batch)
        return {"loss": loss, **metrics}

    return jax.jit(evaluate)


def make_supernet_eval(model, teacher) -> Callable:
    """Jitted `eval(params, teacher_params, batch, masks) -> metrics` for one architecture's
    masks (no dropout); one compile serves every architecture (the one-shot evaluation)."""
    loss_fn = supernet_loss_fn(model, teacher)

    def evaluate(params, teacher_params, batch, masks):
        teacher_inter = apply_model(
            teacher, teacher_params, batch, collect=("hidden", "attn_scores")
        )
        loss, metrics = loss_fn(params, teacher_inter, batch, masks)
        return {"loss": loss, **metrics}

    return jax.jit(evaluate)
