"""LadaBERT (Mao et al. 2020): SVD factorization, then iterative magnitude pruning of the
factors towards a target compression ratio; distillation comes from `config.distill`.

What the method does (the hybrid of the paper, with these choices made where it leaves
room; see benchmarks/results/lowrank.md):
  1. `init`: every selected kernel W [in, out] is factorized once by truncated SVD
     (`LowRank` with `ratio=factor_ratio`: the largest rank whose factors hold at most
     that share of W's values), then the first pruning round runs on the factors.
  2. Pruning rounds: `rounds` in all, the first at init, the others at `round_steps`
     (spread evenly up to `end_fraction` of training, so the last part of training runs
     at the final size). After round k of R, N - floor(N (1 - k / R)^3) factor values
     are zero (Zhu & Gupta's cubic schedule taken in R steps), where
     N = (factor values) - round(target_ratio * dense values) is what must go. Scores
     are |w| of the masked factors, pooled over every factor (global), so pruned values
     stay pruned and the final count is exact.
  3. Between rounds the model trains with knowledge distillation from the fine-tuned
     teacher (the logit KD of `methods/distill/logits.py`, set by `config.distill`).

The compression ratio is counted exactly: nonzero values of the factors over the values
of the dense kernels they replace; after the last round it is
round(target_ratio * dense) / dense. `factor_ratio` 0 means sqrt(target_ratio): the
factorization and the pruning each keep the same share (e.g. 0.707 each for 0.5).
"""

import dataclasses
import math
from fractions import Fraction

import jax
import jax.numpy as jnp

from methods.base import fields_from
from methods.lowrank.factorize import LowRank, factorized_size
from methods.pruning import masks as mask_lib
from methods.pruning.magnitude import ENCODER_KERNELS, MaskPruning


def cubic_counts(total: int, rounds: int) -> tuple[int, ...]:
    """How many of `total` values are pruned after each of `rounds` rounds:
    total - floor(total * (1 - k / rounds)^3), exact in integers; the last is `total`."""
    return tuple(
        total - math.floor(total * Fraction(rounds - k, rounds) ** 3) for k in range(1, rounds + 1)
    )


def spread_steps(rounds: int, end_step: int) -> tuple[int, ...]:
    """The update counts after which rounds 2..R run: evenly up to `end_step` (>= 1)."""
    if rounds < 2:
        return ()
    return tuple(max(1, round(k * end_step / (rounds - 1))) for k in range(1, rounds))


@dataclasses.dataclass(frozen=True)
class LadaBert(MaskPruning):
    """See the module doc. `select`: the dense kernels to factorize (regexes over paths)."""

    target_ratio: float = 0.5
    factor_ratio: float = 0.0
    rounds: int = 4
    round_steps: tuple[int, ...] = ()
    select: tuple[str, ...] = ENCODER_KERNELS

    def __post_init__(self):
        if not 0.0 < self.target_ratio < 1.0:
            raise ValueError(f"target_ratio must be in (0, 1), got {self.target_ratio}")
        if not self.target_ratio <= self.resolved_factor_ratio <= 1.0:
            raise ValueError(
                f"factor_ratio must be in [target_ratio, 1], got {self.resolved_factor_ratio}"
            )
        if self.rounds < 1 or len(self.round_steps) > self.rounds - 1:
            raise ValueError("need rounds >= 1 and at most rounds - 1 round_steps")

    @classmethod
    def from_config(cls, block, context):
        rounds = block.rounds if context.trains else 1  # no training: one round, at init
        steps = spread_steps(rounds, context.steps(block.end_fraction))
        return cls(**fields_from(cls, block, rounds=rounds, round_steps=steps))

    @property
    def name(self) -> str:
        return "ladabert"

    @property
    def resolved_factor_ratio(self) -> float:
        return self.factor_ratio or math.sqrt(self.target_ratio)

    @property
    def factor_select(self) -> tuple[str, ...]:
        """The factors of the selected kernels (what pruning acts on)."""
        return tuple(f"{pattern}/(u|v)" for pattern in self.select)

    def _masks(self, params, selected, pruned):
        scores = jax.tree_util.tree_map(abs, params)
        return mask_lib.compute_masks(scores, selected, lambda n: pruned, "global")

    def init(self, params, rngs):
        params, _ = LowRank(ratio=self.resolved_factor_ratio, select=self.select).init(params, rngs)
        size = factorized_size(params)
        total = size["lowrank_factor_params"] - round(
            Fraction(str(self.target_ratio)) * size["lowrank_dense_params"]
        )
        if total < 0:
            raise ValueError("the factors are already below the target: lower factor_ratio")
        counts = jnp.asarray(cubic_counts(total, self.rounds), jnp.int32)
        first = self.rounds - 1 - len(self.round_steps)  # rounds not scheduled later run now
        selected = mask_lib.select_leaves(params, self.factor_select)
        masks = self._masks(params, selected, counts[first])
        return params, {"masks": masks, "counts": counts}

    def update(self, state, params, grads, aux, step):
        if grads is None or not self.round_steps:  # a forward-only pass; or all rounds done
            return state
        done = step + 1
        steps = jnp.asarray(self.round_steps, jnp.int32)
        first = self.rounds - 1 - len(self.round_steps)
        finished = first + jnp.sum(done >= steps)  # index of the round in force after `done`
        selected = mask_lib.select_leaves(params, self.factor_select)
        masked = mask_lib.apply_masks(params, state["masks"])
        masks = mask_lib.recompute_on(
            jnp.any(done == steps),
            lambda: self._masks(masked, selected, state["counts"][finished]),
            state["masks"],
        )
        return {**state, "masks": masks}

    def report(self, params, state):
        masked = mask_lib.apply_masks(jax.device_get(params), jax.device_get(state["masks"]))
        selected = mask_lib.select_leaves(masked, self.factor_select)
        size = factorized_size(masked)
        nonzero = sum(
            int(jnp.count_nonzero(leaf))
            for leaf, on in zip(
                jax.tree_util.tree_leaves(masked), jax.tree_util.tree_leaves(selected), strict=True
            )
            if on
        )
        return {
            **size,
            **mask_lib.report(masked, state["masks"], selected),
            "ladabert_nonzero_factor_params": nonzero,
            "ladabert_compression_ratio": nonzero / size["lowrank_dense_params"],
            "ladabert_target_ratio": self.target_ratio,
        }
