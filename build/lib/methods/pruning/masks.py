"""Mask machinery shared by pruning methods: exact top-k masks, per leaf or global.

Masks live in a tree shaped like the params: float32 0/1 arrays on selected
leaves and a scalar 1.0 elsewhere, so `params * mask` is a no-op there.
"""

import math
from fractions import Fraction

import jax
import jax.numpy as jnp

from methods import selectors


def pruned_count(sparsity, n: int):
    """How many of `n` entries a sparsity prunes: floor(sparsity * n).

    A Python number (or a callable `n -> count`, e.g. `SparsitySchedule.count`) is
    counted exactly in integers (the decimal the user wrote: 0.9 of 10,616,832 is
    9,555,148, where float32 says 9,555,149); a traced value in float32.
    """
    if callable(sparsity):
        return sparsity(n)
    if isinstance(sparsity, int | float):
        return math.floor(Fraction(str(float(sparsity))) * n)
    return jnp.floor(sparsity * n).astype(jnp.int32)


def keep_mask(scores: jax.Array, sparsity) -> jax.Array:
    """0/1 mask zeroing exactly `pruned_count(sparsity, n)` entries with the lowest scores."""
    flat = scores.reshape(-1)
    pruned = pruned_count(sparsity, flat.size)
    order = jnp.argsort(flat, stable=True)  # one sort; ranks by scatter, not a second sort
    ranks = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
    return (ranks >= pruned).astype(jnp.float32).reshape(scores.shape)


def recompute_on(update_step, compute, old_masks):
    """`compute()` on the schedule's update steps, else `old_masks`.

    `lax.cond` runs only the taken branch, so the sorts behind a mask cost
    nothing on the other steps (a `where` would compute them every step).
    """
    return jax.lax.cond(update_step, compute, lambda: old_masks)


def ones_like_selected(params, selected):
    """The all-keep mask tree."""
    return jax.tree_util.tree_map(
        lambda p, s: jnp.ones(p.shape, jnp.float32) if s else jnp.ones((), jnp.float32),
        params,
        selected,
    )


def compute_masks(scores, selected, sparsity, scope: str):
    """Masks from a score tree: each selected leaf alone ('layer') or pooled ('global')."""
    if scope == "layer":
        return jax.tree_util.tree_map(
            lambda s, on: keep_mask(s, sparsity) if on else jnp.ones((), jnp.float32),
            scores,
            selected,
        )
    if scope != "global":
        raise ValueError(f"unknown pruning scope {scope!r}; known: 'layer', 'global'")
    leaves, treedef = jax.tree_util.tree_flatten(scores)
    on = jax.tree_util.tree_leaves(selected)
    pooled = jnp.concatenate([x.reshape(-1) for x, s in zip(leaves, on, strict=True) if s])
    flat_mask, masks, offset = keep_mask(pooled, sparsity), [], 0
    for leaf, s in zip(leaves, on, strict=True):
        if s:
            masks.append(flat_mask[offset : offset + leaf.size].reshape(leaf.shape))
            offset += leaf.size
        else:
            masks.append(jnp.ones((), jnp.float32))
    return jax.tree_util.tree_unflatten(treedef, masks)


def apply_masks(params, masks):
    return jax.tree_util.tree_map(lambda p, m: p * m.astype(p.dtype), params, masks)


def select_leaves(params, patterns) -> dict:
    """Boolean tree of the leaves pruning acts on; an empty selection is an error."""
    selected = selectors.select(params, list(patterns))
    if not any(jax.tree_util.tree_leaves(selected)):
        raise ValueError(f"pruning patterns {list(patterns)} select no parameter")
    return selected


def sparsity_of(masks, selected) -> float:
    """Fraction of selected weights that are masked."""
    kept = total = 0.0
    for mask, on in zip(
        jax.tree_util.tree_leaves(masks), jax.tree_util.tree_leaves(selected), strict=True
    ):
        if on:
            kept += float(jnp.sum(mask))
            total += mask.size
    return 1.0 - kept / total


def sparse_bytes(params, masks, selected) -> int:
    """Bytes with selected leaves stored sparse: kept values + a 1-bit-per-weight bitmap.

    Unselected leaves count their dense bytes. This is the size a sparse export
    would take (bitmap format), reported next to the dense `bytes`.
    """
    total = 0
    for p, mask, on in zip(
        jax.tree_util.tree_leaves(params),
        jax.tree_util.tree_leaves(masks),
        jax.tree_util.tree_leaves(selected),
        strict=True,
    ):
        if on:
            kept = int(jnp.sum(jnp.broadcast_to(mask, p.shape) != 0))
            total += kept * p.dtype.itemsize + (p.size + 7) // 8
        else:
            total += p.size * p.dtype.itemsize
    return total


def n_of_m_mask(scores: jax.Array, n: int, m: int) -> jax.Array:
    """Keeps the `n` highest scores in every group of `m` consecutive inputs (axis 0).

    For a Dense kernel [in, out] this is the N:M pattern (e.g. 2:4) that sparse
    tensor cores accelerate: each output's weights come in groups of m inputs.
    """
    if not 0 < n <= m:
        raise ValueError(f"need 0 < n <= m, got {n}:{m}")
    if scores.shape[0] % m:
        raise ValueError(f"axis 0 of size {scores.shape[0]} is not a multiple of m={m}")
    groups = scores.reshape(scores.shape[0] // m, m, -1)
    ranks = jnp.argsort(jnp.argsort(groups, axis=1, stable=True), axis=1, stable=True)
    return (ranks >= m - n).astype(jnp.float32).reshape(scores.shape)


def report(params, masks, selected) -> dict:
    """results.json numbers of a masked model: `sparsity` and `sparse_bytes`."""
    return {
        "sparsity": sparsity_of(masks, selected),
        "sparse_bytes": sparse_bytes(params, masks, selected),
    }
