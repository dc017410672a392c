"""Low-rank factorization as a method: selected Dense kernels become truncated-SVD factors.

`LowRank.init` replaces each selected kernel W [in, out] by `{"u": [in, r], "v": [r, out]}`
(`svd.factorize`), the rank chosen per kernel by one of
  `rank`    the same rank r for every kernel (capped at min(in, out)),
  `energy`  the smallest rank keeping that share of sum(s_i²) (per kernel),
  `ratio`   the largest rank whose factors hold at most that share of the kernel's values;
`multiple` rounds the energy rank up and the ratio rank down to a multiple of it (16: the
int8 factors then fit the VNNI kernel, whose column blocks are 16 wide); an explicit
`rank` is kept as given. The model runs the factors physically, as two products
(`bertjax/models/bert.py`).
Training then fine-tunes the factors. Nothing is masked, so `present` is the identity;
checkpoints store the factors (`bertjax/models/checkpoints.py`, `bertjax_lowrank`).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models import convert
from methods import selectors
from methods.base import Method
from methods.lowrank import svd
from methods.pruning.magnitude import ENCODER_KERNELS


def factor_paths(params: Any) -> dict[str, dict]:
    """Every factorized kernel of a params tree by its '/'-joined path."""
    found = {}

    def walk(tree, path):
        for key, value in tree.items():
            name = f"{path}/{key}" if path else str(key)
            if convert.is_factorized(value):
                found[name] = value
            elif isinstance(value, dict):
                walk(value, name)

    walk(params, "")
    return found


def factorized_size(params: Any) -> dict[str, Any]:
    """Sizes of a tree's factorized kernels: their ranks, the values of their factors
    against those of the dense kernels they replace, and how many run in fewer FLOPs."""
    factors = factor_paths(params)
    ranks, dense, stored, faster = {}, 0, 0, 0
    for name, leaf in factors.items():
        (rows, rank), cols = convert.shape_of(leaf[convert.U]), convert.shape_of(leaf[convert.V])[1]
        ranks[name] = int(rank)
        dense += rows * cols
        stored += rank * (rows + cols)
        faster += rank < svd.break_even_rank((rows, cols))
    return {
        "lowrank_kernels": len(factors),
        "lowrank_ranks": ranks,
        "lowrank_dense_params": int(dense),
        "lowrank_factor_params": int(stored),
        "lowrank_param_ratio": stored / dense if dense else 1.0,
        "lowrank_fewer_flops_kernels": int(faster),
    }


@dataclasses.dataclass(frozen=True)
class LowRank(Method):
    """Truncated-SVD factorization of the kernels `select` matches (see the module doc).
    Exactly one of `rank`, `energy`, `ratio` is set (> 0)."""

    rank: int = 0
    energy: float = 0.0
    ratio: float = 0.0
    multiple: int = 1
    select: tuple[str, ...] = ENCODER_KERNELS

    def __post_init__(self):
        chosen = [name for name in ("rank", "energy", "ratio") if getattr(self, name)]
        if len(chosen) != 1:
            raise ValueError(f"set exactly one of rank, energy, ratio (> 0); got {chosen}")
        if self.energy and not 0.0 < self.energy <= 1.0:
            raise ValueError(f"energy must be in (0, 1], got {self.energy}")
        if self.ratio and not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")
        if self.multiple < 1:
            raise ValueError(f"multiple must be >= 1, got {self.multiple}")

    @property
    def name(self) -> str:
        return "lowrank"

    def rank_of(self, kernel) -> int:
        """The rank this method gives a kernel [in, out]."""
        if self.rank:
            return min(self.rank, *np.shape(kernel))
        full, m = min(np.shape(kernel)), self.multiple
        if self.ratio:  # down (the factors stay within the ratio), but at least one multiple
            rank = svd.rank_for_ratio(np.shape(kernel), self.ratio)
            return min(max(m, rank // m * m), full)
        rank = svd.rank_for_energy(svd.singular_values(kernel), self.energy)
        return min(-(-rank // m) * m, full)  # up: the energy is still kept

    def init(self, params, rngs):
        chosen = selectors.select(params, list(self.select))
        if not any(jax.tree_util.tree_leaves(chosen)):
            raise ValueError(f"lowrank patterns {list(self.select)} select no parameter")

        def replace(path, leaf, on):
            if not on:
                return leaf
            name = selectors.path_string(path)
            if not name.endswith("/kernel") or jnp.ndim(leaf) != 2:
                raise ValueError(f"{name}: only Dense kernels [in, out] are factorized")
            kernel = np.asarray(jax.device_get(leaf))
            factors = svd.factorize(kernel, self.rank_of(kernel))
            return {key: jnp.asarray(value, leaf.dtype) for key, value in factors.items()}

        return jax.tree_util.tree_map_with_path(replace, params, chosen), {}

    def report(self, params, state):
        return factorized_size(params)
