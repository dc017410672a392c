"""Hugging Face BERT state dicts <-> bertjax parameter trees, both directions.

HF names map one to one onto ours: `encoder.layer.3.attention.self.query.weight`
is `bert/encoder/layer/3/attention/self/query/kernel` (transposed, since
torch Linear stores [out, in]); embeddings are `.../embedding`; LayerNorm
`weight`/`gamma` is `scale`. The `bert.` prefix is optional on the way in.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np

ENCODER_ROOTS = ("embeddings", "encoder", "pooler")
# Keys with no parameter of their own: buffers, the tied MLM decoder, the NSP head.
_SKIPPED = ("position_ids", "cls.predictions.decoder.", "cls.seq_relationship.")


def _leaf_name(parts: list[str]) -> tuple[str, bool]:
    """Our leaf name for an HF leaf, and whether the tensor is transposed."""
    leaf, owner = parts[-1], parts[-2] if len(parts) > 1 else ""
    if owner == "LayerNorm":
        return {"weight": "scale", "gamma": "scale", "bias": "bias", "beta": "bias"}[leaf], False
    if owner.endswith("_embeddings"):
        return "embedding", False
    if leaf == "weight":
        return "kernel", True
    return leaf, False


def hf_key_to_path(key: str) -> tuple[tuple[str, ...], bool] | None:
    """`(path, transpose)` for one HF key, or None for keys with no parameter."""
    if any(skip in key for skip in _SKIPPED):
        return None
    parts = key.split(".")
    if parts[0] == "bert":
        parts = parts[1:]
    if parts[0] in ENCODER_ROOTS:
        parts = ["bert", *parts]
    elif parts[0] not in ("classifier", "cls"):
        raise KeyError(f"unexpected BERT checkpoint key {key!r}")
    if parts[-2:] == ["predictions", "bias"]:
        return tuple(parts), False
    leaf, transpose = _leaf_name(parts)
    return (*parts[:-1], leaf), transpose


def from_hf_state_dict(state: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Nested params (`{"bert": ..., "classifier": ..., "cls": ...}`) from an HF state dict."""
    params: dict[str, Any] = {}
    for key, value in state.items():
        mapped = hf_key_to_path(key)
        if mapped is None:
            continue
        path, transpose = mapped
        value = np.asarray(value)
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value.T if transpose else value
    return params


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def to_hf_state_dict(params: Mapping[str, Any], *, prefix_encoder: bool) -> dict[str, np.ndarray]:
    """HF state dict of our params; `prefix_encoder` adds `bert.` (task models)."""
    state = {}
    for path, value in _flatten(params):
        value = np.asarray(value, dtype=np.float32)
        parts = list(path)
        if parts[0] == "bert" and not prefix_encoder:
            parts = parts[1:]
        leaf = parts[-1]
        if leaf == "kernel":
            parts[-1], value = "weight", value.T
        elif leaf in ("scale", "embedding"):
            parts[-1] = "weight"
        state[".".join(parts)] = np.ascontiguousarray(value)
    return state
