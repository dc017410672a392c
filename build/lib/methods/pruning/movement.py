"""Movement pruning (Sanh et al. 2020), as the authors' code trains it.

Each selected weight W has a learned importance score S, a method-owned
parameter under `params["movement_scores"]` (same sub-paths as the weights).
The model sees W' = W * M(S) with a straight-through mask: forward M(S) is 0/1,
backward dL/dS = dL/dM = (dL/dW') * W, and dL/dW = (dL/dW') * M, so weights
under a pruned mask get no gradient while their scores keep learning.
  hard: M keeps the top-k scores at the cubic schedule's sparsity (recomputed
        on the schedule's update steps, `every_steps`);
  soft: M keeps scores above `threshold`, and `l1 * mean_kernels(mean(sigmoid(S)))`
        joins the loss (the authors' regularizer): sparsity is an outcome.
Scores start at 0 and are trained by their own optimizer (`wrap_optimizer`):
`score_optimizer="adam"` at `score_lr` (the authors: 1e-2), or "sum", plain
SGD, the paper's S <- S - lr * dL/dS.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from bertjax.models.interventions import Interventions
from methods import selectors
from methods.pruning import masks as mask_lib
from methods.pruning.magnitude import MaskPruning
from methods.pruning.schedules import SparsitySchedule

SCORES = "movement_scores"


def _split(params):
    """`(model params, scores)`."""
    return {k: v for k, v in params.items() if k != SCORES}, params.get(SCORES)


@dataclasses.dataclass(frozen=True)
class MovementPruning(MaskPruning):
    schedule: SparsitySchedule = SparsitySchedule(0.5, start_step=0, end_step=1000, every=10)
    movement: str = "hard"
    threshold: float = 0.0
    l1: float = 0.0
    score_lr: float = 1e-2
    score_optimizer: str = "adam"

    def __post_init__(self):
        if self.movement not in ("hard", "soft"):
            raise ValueError(f"unknown movement pruning kind {self.movement!r}; known: hard, soft")
        if self.score_optimizer not in ("sum", "adam"):
            raise ValueError(
                f"unknown movement score_optimizer {self.score_optimizer!r}; known: sum, adam"
            )

    @property
    def name(self) -> str:
        suffix = "" if self.score_optimizer == "sum" else f"_{self.score_optimizer}"
        return f"prune_movement_{self.movement}{suffix}"

    def _selected(self, model_params):
        return mask_lib.select_leaves(model_params, self.select)

    def init(self, params, rngs):
        selected = self._selected(params)
        scores = jax.tree_util.tree_map(
            lambda p, on: jnp.zeros(p.shape, jnp.float32) if on else None, params, selected
        )
        masks = mask_lib.ones_like_selected(params, selected)
        return {**params, SCORES: scores}, {"masks": masks}

    def present(self, params, state, step, train):
        model_params, scores = _split(params)
        selected = self._selected(model_params)

        def masked(p, mask, s, on):
            if not on:
                return p
            ste = jax.lax.stop_gradient(mask) + (s - jax.lax.stop_gradient(s))
            return p * ste.astype(p.dtype)

        seen = jax.tree_util.tree_map(masked, model_params, state["masks"], scores, selected)
        return seen, Interventions()

    def loss(self, task_loss, student, teacher, batch, params, state, step):
        if self.movement != "soft" or not self.l1:
            return task_loss, {}
        kernels = jax.tree_util.tree_leaves(params[SCORES])
        regularizer = sum(jnp.mean(jax.nn.sigmoid(s)) for s in kernels) / len(kernels)
        return task_loss + self.l1 * regularizer, {"score_l1": regularizer}

    def wrap_optimizer(self, tx, params):
        score_tx = (
            optax.adam(self.score_lr)
            if self.score_optimizer == "adam"
            else optax.sgd(self.score_lr)
        )

        def labels(tree):
            out = {}
            for key, value in tree.items():
                group = "scores" if key == SCORES else "model"
                out[key] = jax.tree_util.tree_map(lambda _, g=group: g, value)
            return out

        return optax.multi_transform({"scores": score_tx, "model": tx}, labels)

    def update(self, state, params, grads, aux, step):
        if grads is None:
            return state
        model_params, scores = _split(params)
        selected = self._selected(model_params)
        # Unselected leaves score 0 (compute_masks gives them a scalar 1 mask).
        dense_scores = jax.tree_util.tree_map(
            lambda p, s: jnp.zeros(()) if s is None else s, model_params, scores
        )
        done = step + 1
        if self.movement == "soft":
            masks = jax.tree_util.tree_map(
                lambda s, on: (s > self.threshold).astype(jnp.float32) if on else jnp.ones(()),
                dense_scores,
                selected,
            )
        else:
            masks = mask_lib.recompute_on(
                self.schedule.is_update_step(done),
                lambda: mask_lib.compute_masks(
                    dense_scores, selected, self.schedule.count(done), self.scope
                ),
                state["masks"],
            )
        return {"masks": masks}

    def finalize(self, params, state, config):
        return super().finalize(_split(params)[0], state, config)

    def report(self, params, state):
        return super().report(_split(params)[0], state)


def score_paths(params) -> list[str]:
    """The '/'-joined paths of the scores (for tests and inspection)."""
    return selectors.param_paths(params.get(SCORES, {}))
