"""Hugging Face BERT state dicts <-> bertjax parameter trees, both directions.

HF names map one to one onto ours: `encoder.layer.3.attention.self.query.weight`
is `bert/encoder/layer/3/attention/self/query/kernel` (transposed, since
torch Linear stores [out, in]); embeddings are `.../embedding`; LayerNorm
`weight`/`gamma` is `scale`. The `bert.` prefix is optional on the way in.

Stored int8 (`methods/quant/storage.py`): a quantized leaf is a dict
`{"qvalue": int8, "scale": float32[, "input_scale": float32 []]}` in place of the
array: a Dense `kernel` [in, out] with one scale per output channel, an `embedding`
table [V, H] with one scale per row. In HF layout the int8 tensor keeps the leaf's
name (`...query.weight` int8 [out, in], `...word_embeddings.weight` int8 [V, H]) and
the scales sit beside it: `...weight_scale` float32 [out] / [V], and with static
activation scales `...input_scale` float32 [].

Factorized (`methods/lowrank/`): a Dense `kernel` may be `{"u": [in, r], "v": [r, out]}`,
the kernel being `u @ v`. In HF layout the pair sits where `X.weight` would, as
`X.weight_u` [r, in] (= u.T) and `X.weight_v` [out, r] (= v.T), so that
`X.weight = X.weight_v @ X.weight_u` in torch's [out, in] orientation. Either factor may
itself be stored in int8 (a low-rank model quantized after factorizing), as any int8
kernel: `X.weight_u` int8 with `X.weight_u_scale` [r], `X.weight_v` int8 with
`X.weight_v_scale` [out].
"""

from collections.abc import Mapping
from typing import Any

import numpy as np

ENCODER_ROOTS = ("embeddings", "encoder", "pooler")
# Keys with no parameter of their own: buffers, the tied MLM decoder, the NSP head.
_SKIPPED = ("position_ids", "cls.predictions.decoder.", "cls.seq_relationship.")
# Method-owned trees exported beside the model (early exit's heads, `exit_heads.{i}...`;
# TR-BERT's policy nets, `token_policy.{layer}...`): the model loader skips them;
# `side_tree(state, root)` reads one back.
SIDE_TREES = ("exit_heads", "token_policy")
# A stored-int8 leaf: int8 values and float32 scales (and a static activation scale).
QVALUE, SCALE, INPUT_SCALE = "qvalue", "scale", "input_scale"
# HF-layout suffixes of the scales of the int8 tensor `X.weight`: `X.weight_scale`, ...
_SCALE_SUFFIXES = {"weight_scale": SCALE, "input_scale": INPUT_SCALE}
# A factorized kernel `u @ v`, and the HF-layout suffixes of its two factors.
U, V = "u", "v"
_FACTOR_SUFFIXES = {"weight_u": U, "weight_v": V}
# The per-output-channel scales of int8 factors: `X.weight_u_scale`, `X.weight_v_scale`.
_FACTOR_SCALE_SUFFIXES = {f"{suffix}_scale": field for suffix, field in _FACTOR_SUFFIXES.items()}


def is_quantized(node: Any) -> bool:
    """Whether `node` is a stored-int8 leaf (`{"qvalue", "scale"[, "input_scale"]}`)."""
    return isinstance(node, Mapping) and QVALUE in node and SCALE in node


def has_quantized(tree: Any) -> bool:
    """Whether any leaf of a params tree is stored in int8."""
    if is_quantized(tree):
        return True
    return isinstance(tree, Mapping) and any(has_quantized(v) for v in tree.values())


def is_factorized(node: Any) -> bool:
    """Whether `node` is a factorized Dense kernel (`{"u": [in, r], "v": [r, out]}`)."""
    return isinstance(node, Mapping) and set(node) == {U, V}


def has_factorized(tree: Any) -> bool:
    """Whether any Dense kernel of a params tree is factorized."""
    if is_factorized(tree):
        return True
    return isinstance(tree, Mapping) and any(has_factorized(v) for v in tree.values())


def shape_of(node: Any) -> tuple[int, ...]:
    """The shape of the float array a param stands for: a stored-int8 leaf's values, a
    factorized kernel's `u @ v` ([in, out]), a plain array's own."""
    if is_factorized(node):
        return (shape_of(node[U])[0], shape_of(node[V])[-1])
    return tuple(np.shape(node[QVALUE] if is_quantized(node) else node))


def is_stored(node: Any) -> bool:
    """Whether `node` is a param in a stored form (int8 or factorized), not a plain array."""
    return is_quantized(node) or is_factorized(node)


def has_stored(tree: Any) -> bool:
    """Whether a params tree holds any stored-form leaf (what `dequantize` undoes)."""
    return has_quantized(tree) or has_factorized(tree)


def dequantize_leaf(name: str, node: Mapping) -> np.ndarray:
    """The float32 array of a stored-int8 leaf called `name` (`kernel` or `embedding`)."""
    values = np.asarray(node[QVALUE]).astype(np.float32)
    scale = np.asarray(node[SCALE], np.float32)
    if name == "embedding":  # one scale per row
        return values * scale[:, None]
    return values * scale.reshape((1,) * (values.ndim - 1) + (-1,))  # per output channel


def dequantize(tree: Any, name: str = "") -> Any:
    """`tree` as plain float32 arrays (numpy): every stored-int8 leaf dequantized, every
    factorized kernel multiplied out (`u @ v`): the layout transformers loads."""
    if is_quantized(tree):
        return dequantize_leaf(name, tree)
    if is_factorized(tree):  # either factor may itself be int8
        u, v = (np.asarray(dequantize(tree[f], "kernel"), np.float32) for f in (U, V))
        return u @ v
    if isinstance(tree, Mapping):
        return {k: dequantize(v, k) for k, v in tree.items()}
    return tree


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
    if parts[0] in SIDE_TREES:
        return None
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
    extras: dict[str, dict[str, np.ndarray]] = {}  # HF weight key -> its int8 scales
    factors: dict[str, dict[str, np.ndarray]] = {}  # HF weight key -> its two factors
    factor_scales: dict[str, dict[str, np.ndarray]] = {}  # ... -> scales of int8 factors
    for key, value in state.items():
        head, _, leaf = key.rpartition(".")
        if leaf in _SCALE_SUFFIXES:
            extras.setdefault(f"{head}.weight", {})[_SCALE_SUFFIXES[leaf]] = np.asarray(value)
        elif leaf in _FACTOR_SCALE_SUFFIXES:
            factor_scales.setdefault(f"{head}.weight", {})[_FACTOR_SCALE_SUFFIXES[leaf]] = (
                np.asarray(value, np.float32)
            )
        elif leaf in _FACTOR_SUFFIXES:  # stored transposed, as torch's [out, in]
            value = np.asarray(value)
            value = value if value.dtype == np.int8 else value.astype(np.float32)
            factors.setdefault(f"{head}.weight", {})[_FACTOR_SUFFIXES[leaf]] = value.T
    for key, factor in factors.items():
        if set(factor) != {U, V} or key in state:
            raise ValueError(f"{key}: a factorized kernel needs weight_u and weight_v only")
        if factor[U].shape[1] != factor[V].shape[0]:
            raise ValueError(f"{key}: factor ranks differ ({factor[U].shape}, {factor[V].shape})")
        scales = factor_scales.pop(key, {})
        for field in (U, V):
            if (factor[field].dtype == np.int8) != (field in scales):
                raise ValueError(f"{key}: an int8 factor {field} needs its scale, and only it")
            if field in scales:
                factor[field] = {QVALUE: np.ascontiguousarray(factor[field]), SCALE: scales[field]}
        mapped = hf_key_to_path(key)
        node = params
        for part in mapped[0][:-1]:
            node = node.setdefault(part, {})
        node[mapped[0][-1]] = factor
    if factor_scales:
        raise ValueError(f"factor scales without their factors: {sorted(factor_scales)}")
    skipped = (*_SCALE_SUFFIXES, *_FACTOR_SUFFIXES, *_FACTOR_SCALE_SUFFIXES)
    for key, value in state.items():
        if key.rpartition(".")[2] in skipped:
            continue
        mapped = hf_key_to_path(key)
        if mapped is None:
            continue
        path, transpose = mapped
        value = np.asarray(value)
        value = value.T if transpose else value
        if key in extras:  # a stored-int8 tensor and its scales
            if value.dtype != np.int8 or SCALE not in extras[key]:
                raise ValueError(f"{key}: scales need an int8 tensor with a weight_scale")
            value = {QVALUE: value, **extras.pop(key)}
        elif value.dtype == np.int8:
            raise ValueError(f"{key}: an int8 tensor without {key}_scale")
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    if extras:
        raise ValueError(f"scales without their int8 tensor: {sorted(extras)}")
    return params


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, Mapping) and not is_stored(value):
            yield from _flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def side_tree(state: Mapping[str, np.ndarray], root: str) -> dict[str, Any] | None:
    """The method-owned tree `root` (one of `SIDE_TREES`) of an HF state dict, nested as
    in params (`kernel` [in, out] from `weight` [out, in]), or None when absent."""
    tree: dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != root:
            continue
        value = np.asarray(value)
        if parts[-1] == "weight":
            parts[-1], value = "kernel", value.T
        node = tree
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree or None


def to_hf_state_dict(params: Mapping[str, Any], *, prefix_encoder: bool) -> dict[str, np.ndarray]:
    """HF state dict of our params; `prefix_encoder` adds `bert.` (task models).

    Float leaves are written as float32; stored-int8 leaves as int8 with their
    scales (`X.weight_scale`, `X.input_scale`), factorized kernels as their two factors
    (`X.weight_u`, `X.weight_v`, each float32 or int8 with its `_scale`; see the module
    doc)."""
    state = {}
    for path, value in _flatten(params):
        if is_factorized(value):
            if path[-1] != "kernel":
                raise ValueError(f"{'/'.join(path)}: only Dense kernels are factorized")
            parts = list(path[1:] if path[0] == "bert" and not prefix_encoder else path)
            for suffix, field in _FACTOR_SUFFIXES.items():
                key = ".".join([*parts[:-1], suffix])
                factor = value[field]
                if is_quantized(factor):
                    if INPUT_SCALE in factor:
                        raise ValueError(f"{key}: int8 factors take no static input scale")
                    state[f"{key}_scale"] = np.array(factor[SCALE], np.float32, order="C")
                    factor = np.asarray(factor[QVALUE]).astype(np.int8, copy=False)
                else:
                    factor = np.asarray(factor, np.float32)
                state[key] = np.ascontiguousarray(factor.T)
            continue
        quantized = value if is_quantized(value) else None
        value = np.asarray(value[QVALUE] if quantized else value)
        value = value.astype(np.int8 if quantized else np.float32, copy=False)
        parts = list(path)
        if parts[0] == "bert" and not prefix_encoder:
            parts = parts[1:]
        leaf = parts[-1]
        if leaf == "kernel":
            parts[-1], value = "weight", value.T
        elif leaf in ("scale", "embedding"):
            parts[-1] = "weight"
        elif quantized:
            raise ValueError(f"{'/'.join(path)}: only kernels and embeddings are stored in int8")
        key = ".".join(parts)
        state[key] = np.ascontiguousarray(value)
        for suffix, field in _SCALE_SUFFIXES.items():
            if quantized and field in quantized:
                scale = np.array(quantized[field], np.float32, order="C")  # 0-d stays 0-d
                state[f"{key.rpartition('.')[0]}.{suffix}"] = scale
    return state
