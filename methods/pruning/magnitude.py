"""Unstructured magnitude pruning: scores = |w|, layer-wise or global, any schedule."""

import dataclasses

import jax

from methods.base import Method
from methods.pruning import masks as mask_lib
from methods.pruning.schedules import SparsitySchedule

# Encoder Dense kernels: attention q/k/v/output and both FFN matrices.
ENCODER_KERNELS = (r"bert/encoder/layer/\d+/.*/kernel",)


@dataclasses.dataclass(frozen=True)
class MagnitudePruning(Method):
    """Zeroes the smallest-magnitude weights of the selected leaves.

    `scope="layer"` prunes each leaf to the target sparsity; "global" pools
    all selected leaves; "n:m" (e.g. `n_of_m=(2, 4)`) keeps n of every m
    consecutive inputs of each kernel, whatever the schedule says. Masks are
    recomputed on the schedule's update steps from the masked weights, so
    pruned weights stay pruned as sparsity grows.
    """

    schedule: SparsitySchedule = SparsitySchedule(0.5)
    select: tuple[str, ...] = ENCODER_KERNELS
    scope: str = "layer"
    n_of_m: tuple[int, int] = (2, 4)

    def scores(self, params):
        return jax.tree_util.tree_map(abs, params)

    def _masks(self, params, sparsity):
        selected = mask_lib.select_leaves(params, self.select)
        if self.scope == "n:m":
            n, m = self.n_of_m
            return jax.tree_util.tree_map(
                lambda s, on: mask_lib.n_of_m_mask(s, n, m) if on else jax.numpy.ones(()),
                self.scores(params),
                selected,
            )
        return mask_lib.compute_masks(self.scores(params), selected, sparsity, self.scope)

    def init(self, params, rng):
        selected = mask_lib.select_leaves(params, self.select)
        masks = mask_lib.ones_like_selected(params, selected)
        if self.schedule.start_step == 0:
            masks = self._masks(params, self.schedule.sparsity(0))
        return {"masks": masks}

    def forward_params(self, params, state):
        return mask_lib.apply_masks(params, state["masks"])

    def update(self, params, grads, state, step):
        # `step` counts finished updates; recompute on the schedule's steps.
        masked = mask_lib.apply_masks(params, state["masks"])
        masks = mask_lib.recompute_on(
            self.schedule.is_update_step(step),
            lambda: self._masks(masked, self.schedule.sparsity(step)),
            state["masks"],
        )
        return {"masks": masks}

    def finalize(self, params, state, config):
        return mask_lib.apply_masks(params, state["masks"]), config

    def report(self, params, state):
        selected = mask_lib.select_leaves(params, self.select)
        return {
            "sparsity": mask_lib.sparsity_of(state["masks"], selected),
            "sparse_bytes": mask_lib.sparse_bytes(params, state["masks"], selected),
        }
