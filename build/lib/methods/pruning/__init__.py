"""Pruning by masks: unstructured magnitude and movement, N:M, sparsity schedules."""

from methods.base import Context, Method
from methods.pruning.magnitude import MagnitudePruning
from methods.pruning.movement import MovementPruning
from methods.pruning.schedules import SparsitySchedule

KINDS = {"magnitude": MagnitudePruning, "movement": MovementPruning}


def from_config(block, context: Context) -> Method:
    """The `config.prune` block's method (`block.kind`: magnitude or movement)."""
    if block.kind not in KINDS:
        raise ValueError(f"unknown pruning kind {block.kind!r}; known: {sorted(KINDS)}")
    return KINDS[block.kind].from_config(block, context)


__all__ = ["MagnitudePruning", "MovementPruning", "SparsitySchedule", "from_config"]
