"""Sub-models of a (super)net: first-k slices of every weight (AutoTinyBERT, Yin et al. 2021).

An `Arch` names a sub-model of a full-size model: its first `layers` layers, its first
`hidden` widths of the hidden state, its first `heads` attention heads (q/k/v columns
of those heads, the head size unchanged) and its first `ffn` FFN neurons, the same in
every layer. Two ways to run one:

  slice_params(params, config, arch), sub_config(config, arch)
      a standalone model of that size (the extracted sub-model; `save_pretrained`
      writes it in HF layout);
  interventions(config, arch) / mask_arrays(config, arch)
      the full-size forward with width and depth masks (`hidden_mask`, `head_mask`,
      `ffn_mask`, `layer_mask`): the same outputs on the first `hidden` widths, one
      compiled graph for every architecture (the masks are data).

Pure functions over param pytrees (no Flax modules).
"""

import dataclasses
import re
from typing import Any

import jax.numpy as jnp
import numpy as np

from bertjax.models.config import BertConfig
from bertjax.models.interventions import Interventions


@dataclasses.dataclass(frozen=True, order=True)
class Arch:
    """A uniform sub-architecture: layer count, hidden width, heads, FFN width."""

    layers: int
    hidden: int
    heads: int
    ffn: int

    def qkv(self, head_dim: int) -> int:
        """The q/k/v width: heads x the (fixed) head size."""
        return self.heads * head_dim

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def of_config(cls, config: BertConfig) -> "Arch":
        """The full architecture of a uniform model."""
        return cls(
            config.num_hidden_layers,
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
        )


def check(config: BertConfig, arch: Arch) -> None:
    """Raises ValueError unless `arch` fits inside `config` (a uniform model)."""
    if config.intermediate_sizes or any(config.pruned_heads):
        raise ValueError("sub-models are sliced from a uniform model (no per-layer widths)")
    full = Arch.of_config(config)
    for field in dataclasses.fields(Arch):
        value, limit = getattr(arch, field.name), getattr(full, field.name)
        if not 1 <= value <= limit:
            raise ValueError(f"arch {field.name}={value} outside 1..{limit}")


def sub_config(config: BertConfig, arch: Arch) -> BertConfig:
    """The `BertConfig` of the standalone sub-model; the head size stays the full model's
    (`attention_head_size` is set when heads x head size differs from `hidden`)."""
    check(config, arch)
    head_dim = config.head_dim
    return dataclasses.replace(
        config,
        num_hidden_layers=arch.layers,
        hidden_size=arch.hidden,
        num_attention_heads=arch.heads,
        intermediate_size=arch.ffn,
        attention_head_size=0 if arch.qkv(head_dim) == arch.hidden else head_dim,
    )


# (path pattern, widths of each axis): "h" hidden, "q" q/k/v width, "f" FFN, None whole.
_RULES = (
    (r".*embeddings/\w+_embeddings/embedding$", (None, "h")),
    (r".*LayerNorm/(scale|bias)$", ("h",)),
    (r".*attention/self/(query|key|value)/kernel$", ("h", "q")),
    (r".*attention/self/(query|key|value)/bias$", ("q",)),
    (r".*attention/output/dense/kernel$", ("q", "h")),
    (r".*intermediate/dense/kernel$", ("h", "f")),
    (r".*intermediate/dense/bias$", ("f",)),
    (r".*layer/\d+/output/dense/kernel$", ("f", "h")),
    (r".*(attention/output|layer/\d+/output|pooler)/dense/bias$", ("h",)),
    (r".*pooler/dense/kernel$", ("h", "h")),
    (r"^classifier/kernel$", ("h", None)),
    (r"^classifier/bias$", (None,)),
)


def _widths(path: str) -> tuple:
    for pattern, axes in _RULES:
        if re.match(pattern, path):
            return axes
    raise ValueError(f"no slicing rule for param {path!r}")


def slice_leaf(value: Any, path: str, arch: Arch, head_dim: int) -> np.ndarray:
    """One param's first-k slice (`path` '/'-joined, as in the model's tree)."""
    sizes = {"h": arch.hidden, "q": arch.qkv(head_dim), "f": arch.ffn, None: None}
    axes = _widths(path)
    value = np.asarray(value)
    if len(axes) != value.ndim:
        raise ValueError(f"{path}: {value.ndim} axes, rule has {len(axes)}")
    return value[tuple(slice(None, sizes[a]) for a in axes)]


def slice_params(params: dict, config: BertConfig, arch: Arch) -> dict:
    """The standalone sub-model's params: layers 0..L-1 kept, every weight first-k sliced.

    `params` is a model tree (`bert/...` and a head, or an encoder's own tree); a
    masked-language-model head has no rule and is an error."""
    check(config, arch)
    head_dim = config.head_dim

    def walk(tree, path):
        out = {}
        for key, value in tree.items():
            name = f"{path}/{key}" if path else str(key)
            if re.search(r"encoder/layer$", name) and isinstance(value, dict):
                value = {k: v for k, v in value.items() if int(k) < arch.layers}
            if isinstance(value, dict):
                out[key] = walk(value, name)
            else:
                out[key] = slice_leaf(value, name, arch, head_dim)
        return out

    return walk(params, "")


def mask_arrays(config: BertConfig, arch: Arch) -> dict[str, np.ndarray]:
    """The masks of `arch` at full size, float32: `hidden_mask` [H], `head_mask` [L, N],
    `ffn_mask` [L, I], `layer_mask` [L] (first k set). Stack them to sample many."""
    check(config, arch)
    full = Arch.of_config(config)

    def first(k, n):
        return (np.arange(n) < k).astype(np.float32)

    layer = first(arch.layers, full.layers)
    return {
        "hidden_mask": first(arch.hidden, full.hidden),
        "head_mask": np.tile(first(arch.heads, full.heads), (full.layers, 1)),
        "ffn_mask": np.tile(first(arch.ffn, full.ffn), (full.layers, 1)),
        "layer_mask": layer,
    }


def interventions_of(masks: dict) -> Interventions:
    """The `Interventions` of (possibly traced) `mask_arrays`."""
    return Interventions(
        hidden_mask=jnp.asarray(masks["hidden_mask"]),
        head_mask=jnp.asarray(masks["head_mask"]),
        ffn_mask=jnp.asarray(masks["ffn_mask"]),
        layer_mask=jnp.asarray(masks["layer_mask"]) > 0,
    )


def interventions(config: BertConfig, arch: Arch) -> Interventions:
    """`interventions_of(mask_arrays(config, arch))`."""
    return interventions_of(mask_arrays(config, arch))
