"""Pruning by masks: unstructured (magnitude), with sparsity schedules."""

from methods.pruning.magnitude import MagnitudePruning
from methods.pruning.schedules import SparsitySchedule

__all__ = ["MagnitudePruning", "SparsitySchedule"]
