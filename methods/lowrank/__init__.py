"""Low-rank factorization of Dense kernels (truncated SVD) and LadaBERT, its hybrid with
magnitude pruning and distillation."""

from methods.lowrank.factorize import LowRank, factorized_size

__all__ = ["LowRank", "factorized_size"]
