"""Movement pruning (Sanh et al. 2020): prune weights moving towards zero.

Scores accumulate S <- S - score_lr * (dL/dW') * W, where W' is the masked
weight the model sees; the mask is applied with a straight-through estimator,
so pruned weights keep receiving gradient and can come back.
  hard: the mask keeps the top-k scores at the schedule's sparsity;
  soft: the mask keeps scores above `threshold`, and an L1 penalty
        `l1 * sum(sigmoid(S))` pushes scores down (sparsity is an outcome).
How scores learn from their gradient dL/dS = (dL/dW') * W:
  score_optimizer="sum":  S <- S - score_lr * dL/dS, the paper's formula; the
        ranking is dominated by large |W| (a converged model's scores are mostly
        noise times |W|; benchmarks/prune_oneshot.py);
  score_optimizer="adam": S is trained by Adam at `score_lr` (the authors' code
        trains scores as parameters, lr 1e-2), so each score moves by about
        score_lr per step in its consistent direction whatever |W| is.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from methods.base import Method
from methods.pruning import masks as mask_lib
from methods.pruning.magnitude import ENCODER_KERNELS
from methods.pruning.schedules import SparsitySchedule
from methods.ste import straight_through


@dataclasses.dataclass(frozen=True)
class MovementPruning(Method):
    schedule: SparsitySchedule = SparsitySchedule(0.5, start_step=0, end_step=1000, every=10)
    select: tuple[str, ...] = ENCODER_KERNELS
    scope: str = "layer"
    kind: str = "hard"
    threshold: float = 0.0
    l1: float = 0.0
    score_lr: float = 1.0
    score_optimizer: str = "sum"

    def __post_init__(self):
        if self.kind not in ("hard", "soft"):
            raise ValueError(f"unknown movement pruning kind {self.kind!r}; known: hard, soft")
        if self.score_optimizer not in ("sum", "adam"):
            raise ValueError(
                f"unknown movement score_optimizer {self.score_optimizer!r}; known: sum, adam"
            )

    def _score_tx(self) -> optax.GradientTransformation:
        """The scores' optimizer for score_optimizer="adam" (stateless to build)."""
        return optax.adam(self.score_lr)

    def init(self, params, rng):
        selected = mask_lib.select_leaves(params, self.select)
        zeros = jax.tree_util.tree_map(
            lambda p, on: jnp.zeros(p.shape, jnp.float32) if on else jnp.zeros((), jnp.float32),
            params,
            selected,
        )
        state = {"scores": zeros, "masks": mask_lib.ones_like_selected(params, selected)}
        if self.score_optimizer == "adam":
            state["score_opt"] = self._score_tx().init(zeros)
        return state

    def forward_params(self, params, state):
        return jax.tree_util.tree_map(
            lambda p, m: straight_through(p, p * m.astype(p.dtype)), params, state["masks"]
        )

    def update(self, params, grads, state, step):
        selected = mask_lib.select_leaves(params, self.select)

        def score_grad(score, p, g, on):  # dL/dS through the straight-through mask
            if not on:
                return jnp.zeros_like(score)
            d = g.astype(jnp.float32) * p.astype(jnp.float32)
            if self.kind == "soft" and self.l1:
                sig = jax.nn.sigmoid(score)
                d = d + self.l1 * sig * (1.0 - sig)
            return d

        d = jax.tree_util.tree_map(score_grad, state["scores"], params, grads, selected)
        new_state = {}
        if self.score_optimizer == "adam":
            step_updates, new_state["score_opt"] = self._score_tx().update(d, state["score_opt"])
            scores = optax.apply_updates(state["scores"], step_updates)
        else:
            scores = jax.tree_util.tree_map(lambda s, x: s - self.score_lr * x, state["scores"], d)
        if self.kind == "soft":
            masks = jax.tree_util.tree_map(
                lambda s, on: (s > self.threshold).astype(jnp.float32) if on else jnp.ones(()),
                scores,
                selected,
            )
        else:
            masks = mask_lib.recompute_on(
                self.schedule.is_update_step(step),
                lambda: mask_lib.compute_masks(
                    scores, selected, self.schedule.sparsity(step), self.scope
                ),
                state["masks"],
            )
        return {**new_state, "scores": scores, "masks": masks}

    def finalize(self, params, state, config):
        return mask_lib.apply_masks(params, state["masks"]), config

    def report(self, params, state):
        selected = mask_lib.select_leaves(params, self.select)
        return {
            "sparsity": mask_lib.sparsity_of(state["masks"], selected),
            "sparse_bytes": mask_lib.sparse_bytes(params, state["masks"], selected),
        }
