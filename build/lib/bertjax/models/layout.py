"""Where things live in the params pytree: the per-layer and per-head index rules
that structural compression (head pruning, layer dropping, Theseus, truncation)
and checkpoint I/O share. Pure numpy/dict code, no Flax modules."""

from collections.abc import Sequence

import numpy as np


def head_columns(heads: Sequence[int], dim: int) -> np.ndarray:
    """Columns of the q/k/v kernels (rows of the attention output) that `heads` own."""
    heads = np.asarray(heads, np.int64).reshape(-1)
    return (heads[:, None] * dim + np.arange(dim)[None, :]).reshape(-1)


def encoder(params: dict) -> dict:
    return params["bert"]["encoder"]


def with_layers(params: dict, layers: dict) -> dict:
    """`params` whose encoder holds exactly `layers` ({"0": ..., "1": ...}), nothing else."""
    return {**params, "bert": {**params["bert"], "encoder": {"layer": layers}}}


def select_layers(params: dict, sources: Sequence[int], stack: str = "layer") -> dict:
    """`params` with encoder layers `sources` of `encoder/{stack}` renumbered 0, 1, ...
    (layer dropping: `stack="layer"`; Theseus: its successors, `stack="successor"`)."""
    layers = encoder(params)[stack]
    return with_layers(params, {str(new): layers[str(old)] for new, old in enumerate(sources)})
