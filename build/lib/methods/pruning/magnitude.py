"""Unstructured magnitude pruning: scores = |w|, layer-wise or global, any schedule."""

import dataclasses

import jax
import jax.numpy as jnp

from bertjax.models.interventions import Interventions
from methods.base import Method, fields_from
from methods.pruning import masks as mask_lib
from methods.pruning.schedules import SparsitySchedule

# Encoder Dense kernels: attention q/k/v/output and both FFN matrices.
ENCODER_KERNELS = (r"bert/encoder/layer/\d+/.*/kernel",)


def schedule_of(block, context) -> SparsitySchedule:
    """The sparsity schedule of a `config.prune` block."""
    return SparsitySchedule(
        target=block.sparsity,
        start_step=context.steps(block.start_fraction),
        end_step=context.steps(block.end_fraction),
        every=block.every_steps,
        initial=block.initial_sparsity,
    )


@dataclasses.dataclass(frozen=True)
class MaskPruning(Method):
    """What unstructured pruning methods share: masks in the state, the model sees
    `params * mask`, `finalize` writes the zeros, `report` counts them."""

    schedule: SparsitySchedule = SparsitySchedule(0.5)
    select: tuple[str, ...] = ENCODER_KERNELS
    scope: str = "layer"

    @classmethod
    def from_config(cls, block, context):
        return cls(**fields_from(cls, block, schedule=schedule_of(block, context)))

    def present(self, params, state, step, train):
        return mask_lib.apply_masks(params, state["masks"]), Interventions()

    def finalize(self, params, state, config):
        return mask_lib.apply_masks(params, state["masks"]), config

    def report(self, params, state):
        return mask_lib.report(params, state["masks"], mask_lib.select_leaves(params, self.select))


@dataclasses.dataclass(frozen=True)
class MagnitudePruning(MaskPruning):
    """Zeroes the smallest-magnitude weights of the selected leaves.

    `scope="layer"` prunes each leaf to the target sparsity; "global" pools
    all selected leaves; "n:m" (e.g. `n_of_m=(2, 4)`) keeps n of every m
    consecutive inputs of each kernel, whatever the schedule says. Masks are
    recomputed on the schedule's update steps from the masked weights, so
    pruned weights stay pruned as sparsity grows.
    """

    n_of_m: tuple[int, int] = (2, 4)

    @property
    def name(self) -> str:
        return "prune_magnitude"

    def scores(self, params):
        return jax.tree_util.tree_map(abs, params)

    def _masks(self, params, sparsity):
        selected = mask_lib.select_leaves(params, self.select)
        if self.scope == "n:m":
            n, m = self.n_of_m
            return jax.tree_util.tree_map(
                lambda s, on: mask_lib.n_of_m_mask(s, n, m) if on else jnp.ones(()),
                self.scores(params),
                selected,
            )
        return mask_lib.compute_masks(self.scores(params), selected, sparsity, self.scope)

    def init(self, params, rngs):
        selected = mask_lib.select_leaves(params, self.select)
        masks = mask_lib.ones_like_selected(params, selected)
        if self.schedule.start_step == 0:
            masks = self._masks(params, self.schedule.count(0))
        return params, {"masks": masks}

    def update(self, state, params, grads, aux, step):
        if grads is None:  # a forward-only pass
            return state
        done = step + 1  # masks follow the schedule at the number of finished updates
        masked = mask_lib.apply_masks(params, state["masks"])
        masks = mask_lib.recompute_on(
            self.schedule.is_update_step(done),
            lambda: self._masks(masked, self.schedule.count(done)),
            state["masks"],
        )
        return {"masks": masks}
