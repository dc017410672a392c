"""The jitted train and eval steps: pure functions of (state, batch), on one forward path.

`forward` is the model as the compression methods present it (`Method.present`:
params and interventions); the train step, the eval step and calibration all
call it. Losses are weighted means over `batch["weights"]`, so padded rows
(weight 0) that fill the last batch change nothing, and a batch split over any
number of devices gives the same result.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from bertjax.models.interventions import STATS, empty_stats, matmul_sites
from bertjax.train.state import TrainState
from methods import losses
from methods.base import Method

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def task_loss(
    logits: jax.Array, labels: jax.Array, weights: jax.Array, regression: bool
) -> jax.Array:
    """Weighted mean cross-entropy (classification) or squared error (regression)."""
    return losses.weighted_mean(losses.per_example(logits, labels, regression), weights)


def forward(
    model, method: Method, params, method_state, step, batch: dict, *, train, rng=None, collect=None
):
    """`(outputs, inter, stats)`: the model on `batch` as `method` presents it.

    `train` selects the methods' training interventions (else evaluation's);
    `rng` turns dropout on; `collect` defaults to what the method reads. `stats`
    is the `quant_stats` collection the matmul intervention wrote (pre-populated
    with every site, so that `nn.cond` branches return the same variables), or {}.
    """
    seen, interventions = method.present(params, method_state, step, train)
    variables, mutable = {"params": seen}, []
    if getattr(interventions.matmul, "records", False):
        variables[STATS] = empty_stats(matmul_sites(seen))
        mutable = [STATS]
    result = model.apply(
        variables,
        *(batch[k] for k in MODEL_INPUTS),
        deterministic=rng is None,
        rngs={} if rng is None else {"dropout": rng},
        collect=method.intermediates if collect is None else collect,
        interventions=interventions,
        mutable=mutable or False,
    )
    (outputs, inter), collections = result if mutable else (result, {})
    return outputs, inter, collections.get(STATS, {})


def train_step_fn(
    model, *, regression: bool, method: Method | None = None, teacher=None
) -> Callable:
    """The pure `train_step(state, batch[, teacher_params]) -> (state, metrics)`, not jitted.

    Gradients flow to the raw `state.params` (straight through any mask); the
    method's `update` then sees the loss metrics and collected statistics.
    With a `teacher` model, its params are an argument of the step, held under
    `stop_gradient`, and `method.loss` receives the teacher's `(outputs, inter)`.
    `teacher="cached"`: the teacher's logits come as `batch["teacher_logits"]` (no
    intermediates), e.g. from `bertjax.train.teacher.cached_logits`.
    """
    method = method or Method()

    def apply(params, batch, interventions, collect):
        return model.apply(
            {"params": params},
            *(batch[k] for k in MODEL_INPUTS),
            collect=collect,
            interventions=interventions,
        )

    def train_step(state: TrainState, batch: dict, teacher_params=None):
        step = state.step
        batch, method_state = method.prepare(batch, state.params, state.method_state, step, apply)
        teacher_view = None
        if isinstance(teacher, str):  # "cached": the teacher's logits come with the batch
            teacher_view = ({"logits": batch["teacher_logits"]}, {})
        elif teacher is not None:
            teacher_view = teacher.apply(
                {"params": jax.lax.stop_gradient(teacher_params)},
                *(batch[k] for k in MODEL_INPUTS),
                collect=method.intermediates,
            )

        def loss_fn(params):
            outputs, inter, stats = forward(
                model, method, params, method_state, step, batch,
                train=True, rng=state.step_rng(),
            )  # fmt: skip
            loss = task_loss(outputs["logits"], batch["labels"], batch["weights"], regression)
            total, metrics = method.loss(
                loss, (outputs, inter), teacher_view, batch, params, method_state, step
            )
            return total, ({"task_loss": loss, **metrics}, stats)

        (loss, (metrics, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        aux = jax.lax.stop_gradient({"metrics": metrics, "stats": stats})
        new_method_state = method.update(state.method_state, params, grads, aux, step)
        new_state = state.replace(
            step=step + 1, params=params, opt_state=opt_state, method_state=new_method_state
        )
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}

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
        outputs, _, _ = forward(model, method, params, method_state, 0, batch, train=False)
        return outputs["logits"].astype(jnp.float32)

    return jax.jit(eval_step)


def make_extras_step(model, method: Method) -> Callable:
    """`extras_step(params, method_state, batch) -> dict` of per-example arrays: the
    method's `eval_outputs` of the evaluation forward (dynamic inference's exit logits,
    tokens kept), jitted."""

    def extras_step(params, method_state, batch: dict):
        outputs, inter, _ = forward(model, method, params, method_state, 0, batch, train=False)
        return method.eval_outputs(params, method_state, outputs, inter, batch)

    return jax.jit(extras_step)


def make_calibration_step(model, method: Method) -> Callable:
    """Jitted `(params, method_state, inputs) -> method_state`: one forward pass without
    dropout, as in training, then `update` with no gradient (statistics only)."""

    def calibration_step(params, method_state, inputs):
        _, _, stats = forward(model, method, params, method_state, 0, inputs, train=True)
        aux = jax.lax.stop_gradient({"metrics": {}, "stats": stats})
        return method.update(method_state, params, None, aux, 0)

    return jax.jit(calibration_step)
