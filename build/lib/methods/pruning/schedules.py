"""Sparsity over training: one-shot, or the cubic schedule of Zhu & Gupta (2017)."""

import dataclasses

import jax.numpy as jnp

from methods.pruning.masks import pruned_count


@dataclasses.dataclass(frozen=True)
class SparsitySchedule:
    """Target sparsity as a function of the step.

    With `end_step <= start_step` the mask is computed once, at `start_step`
    (one-shot). Otherwise sparsity rises from `initial` to `target` on
    s_t = target + (initial - target) * (1 - (t - start) / (end - start))^3,
    and masks are recomputed every `every` steps from `start_step` to `end_step`.
    """

    target: float
    start_step: int = 0
    end_step: int = 0
    every: int = 1
    initial: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.initial <= self.target < 1.0:
            raise ValueError(f"need 0 <= initial <= target < 1, got {self.initial}, {self.target}")
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")

    @property
    def one_shot(self) -> bool:
        return self.end_step <= self.start_step

    def sparsity(self, step):
        """Target sparsity at `step` (a Python int or a traced scalar)."""
        if self.one_shot:
            return jnp.where(step >= self.start_step, self.target, 0.0)
        progress = jnp.clip((step - self.start_step) / (self.end_step - self.start_step), 0.0, 1.0)
        value = self.target + (self.initial - self.target) * (1.0 - progress) ** 3
        return jnp.where(step >= self.start_step, value, 0.0)

    def count(self, step):
        """`n -> pruned count at step` (int32): exact in integers once the target is
        reached (see `masks.pruned_count`), the float32 floor on the way there."""

        def count(n: int):
            final = pruned_count(self.target, n)
            reached = step >= (self.start_step if self.one_shot else self.end_step)
            on_the_way = jnp.minimum(pruned_count(self.sparsity(step), n), final)
            started = step >= self.start_step
            return jnp.where(reached, final, jnp.where(started, on_the_way, 0))

        return count

    def is_update_step(self, step):
        """Whether masks are recomputed at `step`."""
        if self.one_shot:
            return step == self.start_step
        in_range = (step >= self.start_step) & (step <= self.end_step)
        # The end step always updates, so the target is reached even when
        # (end - start) is not a multiple of `every`.
        return in_range & (((step - self.start_step) % self.every == 0) | (step == self.end_step))
