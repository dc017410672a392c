"""Stored int8: params whose Dense kernels and embedding tables ARE int8, quantized once.

`quantize_params(params)` replaces each selected leaf by a dict, as qwix / AQT keep
`{qvalue, scale}` in the params pytree:
  Dense kernel [in, out]   {"qvalue": int8 [in, out], "scale": float32 [out]}
                           one symmetric scale per output channel
  embedding    [V, H]      {"qvalue": int8 [V, H],   "scale": float32 [V]}
                           one symmetric scale per row (token)
on the INT8 grid of `methods/quant/int8.py` ([-127, 127], step absmax / 127, via
`quantize_along`), so a kernel's int8 values and scales are exactly the ones
`int8_dot_general` computes from the float kernel on every call. With static
activation scales (`input_scales`, calibrated), a kernel's dict also holds
`"input_scale": float32 []`: its input is quantized as round(x / input_scale), clipped,
instead of per token from each row's absolute maximum.

A factorized kernel `{u, v}` (`methods/lowrank/`) whose path is selected has both
factors stored so, each as a Dense kernel of its own (dynamic activation scales only):
low-rank first, then int8, keeps the rank's bytes at a quarter.

The model (`bertjax/models/bert.py`) runs such params in int8: `Dense` multiplies int8
x int8 with int32 accumulation and rescales by the outer product of the scales;
`Embed` dequantizes the rows it gathers. Checkpoints store them as int8 tensors
(`bertjax/models/convert.py`); `dequantize_params` gives the float32 model back.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from bertjax.models import convert
from methods import selectors
from methods.quant.int8 import quantize_along
from methods.quant.weights import DENSE_KERNELS

QVALUE, SCALE, INPUT_SCALE = convert.QVALUE, convert.SCALE, convert.INPUT_SCALE
# Every Dense the model runs through its own `Dense` (the encoder's layers, Theseus
# successors, the pooler, the sequence classifier) and the three embedding tables.
# Not the MLM head's transform (an `nn.Dense`) nor its word-embedding-tied decoder.
DENSE = (*DENSE_KERNELS, r"classifier/kernel")
EMBEDDINGS = (r"bert/embeddings/(word|position|token_type)_embeddings/embedding",)
DEFAULT_SELECT = DENSE + EMBEDDINGS

is_quantized = convert.is_quantized
has_quantized = convert.has_quantized


def quantize_kernel(kernel: jax.Array, input_scale: jax.Array | None = None) -> dict:
    """`{qvalue, scale[, input_scale]}` of a Dense kernel [in, out]: per output channel."""
    qvalue, scale = quantize_along(kernel, (0,))
    leaf = {QVALUE: qvalue, SCALE: scale.reshape(-1)}
    if input_scale is not None:
        leaf[INPUT_SCALE] = jnp.asarray(input_scale, jnp.float32).reshape(())
    return leaf


def quantize_embedding(table: jax.Array) -> dict:
    """`{qvalue, scale}` of an embedding table [V, H]: one scale per row."""
    qvalue, scale = quantize_along(table, (1,))
    return {QVALUE: qvalue, SCALE: scale.reshape(-1)}


# One compilation per leaf shape (eagerly, each op of quantize_along would compile alone).
_quantize_kernel = jax.jit(quantize_kernel)
_quantize_embedding = jax.jit(quantize_embedding)


def quantize_params(
    params: Any,
    select: str | Sequence[str] = DEFAULT_SELECT,
    input_scales: Mapping[str, Any] | None = None,
) -> Any:
    """`params` with the leaves whose '/'-joined paths match `select` (regexes, fully)
    stored in int8: `kernel` leaves per output channel, `embedding` leaves per row.

    `input_scales`: static activation scales by Dense module path
    (`bert/encoder/layer/0/attention/self/query`), stored beside those kernels; kernels
    without one quantize their input per token at run time. Leaves already stored in int8
    are left alone (their paths end in `/qvalue`); a selected factorized kernel has both
    factors stored in int8. Pure; works under `jit`.
    """
    # A factorized kernel is one leaf for selection: its path is the kernel's.
    chosen = selectors.select(params, select, is_leaf=convert.is_factorized)
    input_scales = dict(input_scales or {})
    if _tied_word_embeddings(params, chosen):
        raise ValueError(
            "the MLM head reads the word-embedding table as its decoder: leave "
            "bert/embeddings/word_embeddings/embedding out of `select`"
        )

    def convert_leaf(path, leaf, on):
        if not on:
            return leaf
        name = selectors.path_string(path)
        module, _, kind = name.rpartition("/")
        if convert.is_factorized(leaf):  # each factor as a kernel of its own
            if module in input_scales:
                raise ValueError(f"{name}: int8 factors take no static input scale")
            return {
                f: factor if convert.is_quantized(factor) else _quantize_kernel(factor)
                for f, factor in leaf.items()
            }
        if kind == "kernel":
            if jnp.ndim(leaf) != 2:
                raise ValueError(f"{name}: a Dense kernel is [in, out], got {jnp.shape(leaf)}")
            return _quantize_kernel(leaf, input_scales.pop(module, None))
        if kind == "embedding":
            return _quantize_embedding(leaf)
        raise ValueError(f"{name}: only `kernel` and `embedding` leaves are stored in int8")

    out = jax.tree_util.tree_map_with_path(
        convert_leaf, params, chosen, is_leaf=convert.is_factorized
    )
    if input_scales:
        raise ValueError(f"input scales of Dense layers not quantized: {sorted(input_scales)}")
    return out


def dequantize_params(params: Any) -> Any:
    """The float32 params of a stored-int8 tree (qvalue * scale; static scales dropped)."""
    return convert.dequantize(jax.device_get(params))


def _tied_word_embeddings(params, chosen) -> bool:
    if not isinstance(params, Mapping) or "cls" not in params:
        return False
    try:
        return bool(chosen["bert"]["embeddings"]["word_embeddings"]["embedding"])
    except (KeyError, TypeError):
        return False


def storage_bytes(params: Any) -> int:
    """Bytes of every array of a params tree (int8 values, scales and float leaves)."""
    return int(sum(jnp.asarray(x).nbytes for x in jax.tree_util.tree_leaves(params)))
