"""Pruning by masks: unstructured magnitude and movement, N:M, sparsity schedules."""

from methods.pruning.magnitude import MagnitudePruning
from methods.pruning.movement import MovementPruning
from methods.pruning.schedules import SparsitySchedule

__all__ = ["MagnitudePruning", "MovementPruning", "SparsitySchedule"]
