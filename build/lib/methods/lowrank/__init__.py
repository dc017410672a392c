"""Low-rank factorization of Dense kernels (truncated SVD) and LadaBERT, its hybrid with
magnitude pruning and distillation."""

from methods.lowrank.factorize import LowRank, factorized_size
from methods.lowrank.ladabert import LadaBert

__all__ = ["LadaBert", "LowRank", "factorized_size"]
