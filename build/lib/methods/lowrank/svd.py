"""Truncated SVD of Dense kernels: W ≈ (U √Σ)(√Σ Vᵀ), the rank chosen by count or energy.

A kernel W [in, out] with singular values s_1 >= s_2 >= ... is replaced by the factors
`{"u": U_r √Σ_r [in, r], "v": √Σ_r V_rᵀ [r, out]}` (the model runs `(x @ u) @ v`,
`bertjax/models/bert.py`). By Eckart–Young this is the best rank-r approximation, with
Frobenius error sqrt(s_{r+1}² + s_{r+2}² + ...). Splitting √Σ evenly gives both factors
the same scale, so that magnitude pruning of the factors (LadaBERT) compares like with like.

Cost: the factors hold r (in + out) values against in · out, and the two products take
r (in + out) multiply-adds per row against in · out, so a factorized kernel is smaller
and needs fewer FLOPs only when r < in · out / (in + out) (`break_even_rank`).
"""

import math

import numpy as np

from bertjax.models import convert


def singular_values(kernel) -> np.ndarray:
    """The singular values of a kernel [in, out], descending (float64)."""
    return np.linalg.svd(np.asarray(kernel, np.float64), compute_uv=False)


def rank_for_energy(values: np.ndarray, energy: float) -> int:
    """The smallest rank whose singular values keep `energy` of the spectral energy
    sum(s_i²) (0 < energy <= 1)."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    squares = np.square(np.asarray(values, np.float64))
    kept = np.cumsum(squares) / squares.sum()
    # The tolerance keeps energy=1 at the full rank despite float rounding of the sum.
    return int(min(np.searchsorted(kept, energy - 1e-12) + 1, len(values)))


def rank_for_ratio(shape: tuple[int, int], ratio: float) -> int:
    """The largest rank whose factors hold at most `ratio` of a [in, out] kernel's values
    (at least 1): floor(ratio · in · out / (in + out))."""
    rows, cols = shape
    return max(1, math.floor(ratio * rows * cols / (rows + cols)))


def break_even_rank(shape: tuple[int, int]) -> float:
    """in · out / (in + out): below it the factors are smaller and cheaper than the kernel."""
    rows, cols = shape
    return rows * cols / (rows + cols)


def factorize(kernel, rank: int) -> dict:
    """`{"u": [in, r], "v": [r, out]}` (float32), the rank-`rank` truncated SVD of
    `kernel` [in, out] with √Σ on both sides. `rank` is capped at min(in, out)."""
    w = np.asarray(kernel, np.float64)
    if w.ndim != 2:
        raise ValueError(f"a Dense kernel is [in, out], got {w.shape}")
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    left, values, right = np.linalg.svd(w, full_matrices=False)
    rank = min(rank, len(values))
    root = np.sqrt(values[:rank])
    return {
        convert.U: (left[:, :rank] * root).astype(np.float32),
        convert.V: (root[:, None] * right[:rank]).astype(np.float32),
    }


def multiply(factors: dict) -> np.ndarray:
    """The kernel `u @ v` [in, out] of a factorized one."""
    return np.asarray(factors[convert.U], np.float32) @ np.asarray(factors[convert.V], np.float32)


def tail_error(values: np.ndarray, rank: int) -> float:
    """Frobenius error of the best rank-`rank` approximation: sqrt(sum of dropped s_i²)."""
    return float(np.sqrt(np.sum(np.square(np.asarray(values, np.float64)[rank:]))))
