"""Load and save BERT checkpoints in Hugging Face layout.

A checkpoint is a directory with `config.json`, weights (`model.safetensors`,
sharded safetensors, or `pytorch_model.bin`) and tokenizer files. Names
resolve as: an existing directory, then a folder under `$BERTJAX_MODELS`, then
the Hugging Face hub (for users with network).

Stored-int8 params (`methods/quant/storage.py`) are written as int8 tensors with
their scales (`convert`'s module doc) and `config.json` `bertjax_quantization`;
`load_pretrained` gives them back as int8 (the model runs them in int8), and
`save_pretrained(..., dequantize=True)` writes the plain fp32 layout transformers loads.
Factorized Dense kernels (`methods/lowrank/`) likewise: written as their two factors
(`X.weight_u`, `X.weight_v`) with `bertjax_lowrank` in config.json, loaded back
factorized, and multiplied out by `dequantize=True`.
"""

import functools
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from bertjax import paths
from bertjax.models import convert, layout
from bertjax.models.config import BertConfig
from bertjax.models.heads import BertModel
from bertjax.models.layout import head_columns
from bertjax.models.variants import is_variant, variant_config

log = logging.getLogger(__name__)
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
_ARCHITECTURES = {
    None: "BertModel",
    "classification": "BertForSequenceClassification",
    "regression": "BertForSequenceClassification",
    "mlm": "BertForMaskedLM",
}


def resolve(name_or_path: str | Path, *, hub: bool = True) -> Path:
    """The local checkpoint directory for a path, a `$BERTJAX_MODELS` name or (with
    `hub`) a hub name; FileNotFoundError when there is none."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    local = paths.models_root() / str(name_or_path)
    if local.is_dir():
        return local
    if not hub:
        raise FileNotFoundError(
            f"{name_or_path}: not a directory (nor a model under {paths.models_root()})"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                str(name_or_path),
                allow_patterns=["*.json", "*.safetensors", "*.txt", "pytorch_model.bin"],
            )
        )
    except Exception as err:  # noqa: BLE001  (any hub failure means: not found)
        raise FileNotFoundError(
            f"model {str(name_or_path)!r}: not a directory, not in $BERTJAX_MODELS "
            f"({paths.models_root()}), and not fetched from the hub ({type(err).__name__})"
        ) from None


def read_state_dict(directory: Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint directory as numpy arrays."""
    from safetensors.numpy import load_file

    if (directory / "model.safetensors").exists():
        return load_file(directory / "model.safetensors")
    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(directory / shard).items()}
    if (directory / "pytorch_model.bin").exists():
        try:
            import torch
        except ImportError:
            raise ImportError(f"{directory}/pytorch_model.bin needs torch to read") from None
        state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {directory}")


def _cut_pad(x: np.ndarray, axis: int, width: int, fill: float = 0) -> np.ndarray:
    """`x` cut to its first `width` entries along `axis`, or padded there with `fill`."""
    x = np.asarray(x)
    index = [slice(None)] * x.ndim
    index[axis] = slice(0, width)
    x = x[tuple(index)]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, max(width - x.shape[axis], 0))
    return np.pad(x, pad, constant_values=fill)


def _on_kernel(kernel: Any, axis: int, fn) -> Any:
    """`fn(x, axis, fill)` applied to a kernel along `axis`. A stored-int8 kernel's values
    get zeros where padded; its per-output-channel scales follow a change of the output
    axis, with scale 1 for padded channels (a zero channel is exact at any scale). A
    factorized kernel's input axis is its `u`'s first, its output axis its `v`'s last."""
    if convert.is_factorized(kernel):  # either factor may be int8
        if axis % 2 == 0:
            return {**kernel, convert.U: _on_kernel(kernel[convert.U], 0, fn)}
        return {**kernel, convert.V: _on_kernel(kernel[convert.V], 1, fn)}
    if not convert.is_quantized(kernel):
        return fn(np.asarray(kernel), axis, 0)
    values = np.asarray(kernel[convert.QVALUE])
    out = {**kernel, convert.QVALUE: fn(values, axis, 0)}
    if axis % values.ndim == values.ndim - 1:
        out[convert.SCALE] = fn(np.asarray(kernel[convert.SCALE]), 0, 1)
    return out


def _width(kernel: Any, axis: int) -> int:
    return convert.shape_of(kernel)[axis]


def resize_ffn(params: dict, widths: Sequence[int]) -> dict:
    """FFN weights cut or zero-padded to `widths[i]` neurons in layer i.

    Zero neurons change no output (gelu(0) = 0 and their output rows are 0),
    so padding gives HF (one FFN width for all layers) the exact same model.
    Stored-int8 kernels are padded with int8 zeros (scales 1).
    """
    layers = params.get("bert", {}).get("encoder", {}).get("layer", {})
    resized = {}
    for key, layer in layers.items():
        width = widths[int(key)]
        ffn_in, ffn_out = layer["intermediate"]["dense"], layer["output"]["dense"]

        def fit(x, axis, fill, width=width):
            return _cut_pad(x, axis, width, fill)

        resized[key] = {
            **layer,
            "intermediate": {
                "dense": {
                    "kernel": _on_kernel(ffn_in["kernel"], 1, fit),
                    "bias": fit(ffn_in["bias"], 0, 0),
                }
            },
            "output": {
                **layer["output"],
                "dense": {"kernel": _on_kernel(ffn_out["kernel"], 0, fit), "bias": ffn_out["bias"]},
            },
        }
    return layout.with_layers(params, resized)


def _place_columns(
    x: np.ndarray, columns: np.ndarray, axis: int, width: int | None, fill: float = 0
):
    """`x` restricted to `columns` of `axis` (width None), or scattered into `fill`s of
    `width`."""
    if width is None:
        return np.take(x, columns, axis=axis)
    shape = list(x.shape)
    shape[axis] = width
    out = np.full(shape, fill, x.dtype)
    index = [slice(None)] * x.ndim
    index[axis] = columns
    out[tuple(index)] = x
    return out


def resize_heads(params: dict, config: BertConfig, *, pad: bool) -> dict:
    """Attention weights between pruned and full head layouts.

    `pad=True` puts each kept head back at its original index and fills removed
    heads with zeros (a zero head adds exactly nothing: zero values, zero output
    rows), which is the only layout transformers 5.x BERT can load;
    `pad=False` keeps only the heads a pruned config has. Stored-int8 kernels get int8
    zeros for removed heads (scales 1).
    """
    layers = params["bert"]["encoder"]["layer"]
    dim, full = config.head_dim, config.num_attention_heads
    resized = {}
    for key, layer in layers.items():
        removed = set(config.pruned_heads[int(key)])
        kept = head_columns([h for h in range(full) if h not in removed], dim)
        attention = layer["attention"]

        def fix(x, axis, fill=0, kept=kept):
            return _place_columns(np.asarray(x), kept, axis, full * dim if pad else None, fill)

        projections = {
            n: {
                "kernel": _on_kernel(attention["self"][n]["kernel"], 1, fix),
                "bias": fix(attention["self"][n]["bias"], 0),
            }
            for n in ("query", "key", "value")
        }
        output = {
            **attention["output"],
            "dense": {
                "kernel": _on_kernel(attention["output"]["dense"]["kernel"], 0, fix),
                "bias": attention["output"]["dense"]["bias"],
            },
        }
        resized[key] = {**layer, "attention": {"self": projections, "output": output}}
    return layout.with_layers(params, resized)


def _stored_as_jax(node: Any, dtype) -> Any:
    """A stored param as jax arrays: int8 values and scales as they are, float factors
    in the model's `dtype`; a factorized kernel factor by factor (either may be int8)."""
    if convert.is_quantized(node):
        return {k: jnp.asarray(v) for k, v in node.items()}
    if convert.is_factorized(node):
        return {k: _stored_as_jax(f, dtype) for k, f in node.items()}
    return jnp.asarray(node, dtype=dtype)


def _merge(target: dict, loaded: dict, prefix: str, report: dict) -> dict:
    """`target` (fresh init) with every leaf that `loaded` has replaced; shapes checked.
    A stored-int8 leaf stays int8 (its values have the float leaf's shape), a factorized
    kernel stays factorized (`u @ v` has the float leaf's shape)."""
    out = {}
    for key, value in target.items():
        name = f"{prefix}/{key}" if prefix else key
        if convert.is_stored(loaded.get(key)):
            shape = convert.shape_of(loaded[key])
            if shape != tuple(value.shape):
                kind = "factors of" if convert.is_factorized(loaded[key]) else "int8 shape"
                raise ValueError(f"{name}: checkpoint {kind} {shape} != model {value.shape}")
            out[key] = _stored_as_jax(loaded[key], value.dtype)
        elif isinstance(value, dict):
            out[key] = _merge(value, loaded.get(key, {}), name, report)
        elif key in loaded:
            if tuple(loaded[key].shape) != tuple(value.shape):
                raise ValueError(
                    f"{name}: checkpoint shape {loaded[key].shape} != model {value.shape}"
                )
            out[key] = jnp.asarray(loaded[key], dtype=value.dtype)
        else:
            report["initialised"].append(name)
            out[key] = value
    return out


@functools.lru_cache(maxsize=16)
def _jitted_init(model: BertModel):
    """`jax.jit(model.init)`, compiled once per architecture (loading reuses it)."""
    return jax.jit(model.init)


def build(
    config: BertConfig,
    head: str | None = None,
    num_labels: int = 2,
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    seed: int = 0,
):
    """A randomly initialised `(model, params)` for a config."""
    model = BertModel(
        config, head=head, num_labels=num_labels, dtype=dtype, param_dtype=param_dtype
    )
    ids = jnp.zeros((1, 8), jnp.int32)
    params = _jitted_init(model)(jax.random.key(seed), ids)["params"]
    return model, flax.core.unfreeze(params)


def load_pretrained(
    name_or_path: str | Path,
    head: str | None = None,
    num_labels: int | None = None,
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    seed: int = 0,
    dequantize: bool = False,
    **config_overrides,
):
    """`(model, params)` from an HF-layout checkpoint; missing head params start random.

    A stored-int8 checkpoint (`bertjax_quantization` in config.json) loads as int8
    params, not dequantized: the model runs its Dense layers in int8; a factorized one
    (`bertjax_lowrank`) loads its kernels as factors (`dequantize=True`: plain float32
    params, e.g. to fine-tune further).

    `name_or_path` may also be a size from `variants` (`tiny`, `mini`, ...) for
    a random model. `num_labels` defaults to the checkpoint's when it has a
    classifier, else 2. `config_overrides` replace config fields (e.g. dropout).
    """
    name = str(name_or_path)
    if is_variant(name) and not Path(name).exists() and not (paths.models_root() / name).is_dir():
        config = variant_config(name, **config_overrides)
        return build(config, head, num_labels or 2, dtype=dtype, param_dtype=param_dtype, seed=seed)
    directory = resolve(name_or_path)
    hf_config = json.loads((directory / "config.json").read_text())
    state = convert.from_hf_state_dict(read_state_dict(directory))
    if dequantize:
        state = convert.dequantize(state)
    has_pooler = "pooler" in state.get("bert", {})
    needs_pooler = head in ("classification", "regression")
    config = BertConfig.from_hf(hf_config)
    config = BertConfig(
        **{**config.__dict__, "add_pooler": has_pooler or needs_pooler, **config_overrides}
    )
    if num_labels is None:
        has_classifier = "classifier" in state
        num_labels = hf_config.get("num_labels", len(hf_config.get("id2label", {})) or 2)
        num_labels = num_labels if has_classifier else 2
    if config.intermediate_sizes:  # stored zero-padded to the widest layer
        state = resize_ffn(state, config.intermediate_sizes)
    if any(config.pruned_heads) and hf_config.get("bertjax_pruned_heads"):
        state = resize_heads(state, config, pad=False)  # stored zero-padded to all heads
    model, fresh = build(config, head, num_labels, dtype=dtype, param_dtype=param_dtype, seed=seed)
    report = {"initialised": []}
    params = _merge(fresh, state, "", report)
    if report["initialised"]:
        log.info(
            "%s: freshly initialised %s",
            directory,
            sorted({"/".join(p.split("/")[:3]) for p in report["initialised"]}),
        )
    unused = set(state) - set(params)
    if unused:
        log.info("%s: not used by head=%s: %s", directory, head, sorted(unused))
    return model, params


def quantization_info(params: dict) -> dict[str, Any]:
    """config.json's description of a stored-int8 params tree (`methods/quant/storage.py`)."""
    leaves = []

    def walk(tree, path):
        for key, value in tree.items():
            name = f"{path}/{key}" if path else key
            if convert.is_quantized(value):
                leaves.append((key, convert.INPUT_SCALE in value))
            elif isinstance(value, dict):
                walk(value, name)

    walk(params, "")
    static = [s for key, s in leaves if key in ("kernel", convert.U, convert.V)]
    activations = (
        "static_per_tensor" if static and all(static)
        else "dynamic_per_token" if not any(static)
        else "mixed"
    )  # fmt: skip
    return {
        "format": "int8",
        "symmetric": True,
        "range": [-127, 127],
        "weights": "per_output_channel",  # X.weight int8 [out, in], X.weight_scale [out]
        "embeddings": "per_row",  # X.weight int8 [V, H], X.weight_scale [V]
        "activations": activations,  # static: X.input_scale [] (x / input_scale, rounded)
        "accumulation": "int32",
        "attention_products": "float",
        "int8_tensors": len(leaves),
    }


def lowrank_info(params: dict) -> dict[str, Any]:
    """config.json's description of the factorized kernels of a params tree: each one's
    rank by its '/'-joined path (`methods/lowrank/`)."""
    ranks = {}

    def walk(tree, path):
        for key, value in tree.items():
            name = f"{path}/{key}" if path else key
            if convert.is_factorized(value):
                ranks[name] = int(convert.shape_of(value[convert.U])[1])
            elif isinstance(value, dict) and not convert.is_quantized(value):
                walk(value, name)

    walk(params, "")
    return {
        "format": "svd",
        "product": "x @ u @ v",  # X.weight_u [r, in] = u.T, X.weight_v [out, r] = v.T
        "factorized_kernels": len(ranks),
        "ranks": ranks,
    }


def save_pretrained(
    model: BertModel,
    params: dict,
    out_dir: str | Path,
    *,
    tokenizer: Any = None,
    labels: Sequence[str] | None = None,
    dequantize: bool = False,
) -> Path:
    """Writes `config.json`, `model.safetensors` and tokenizer files in HF layout.

    `tokenizer`: a checkpoint directory to copy tokenizer files from, or a
    transformers tokenizer to `save_pretrained`. `labels` become `id2label`.
    Stored-int8 params are written in int8 with their scales and described by
    config.json's `bertjax_quantization` (bertjax reads them; transformers does not);
    `dequantize=True` writes them as plain fp32 instead (`transformers` loads that).
    Factorized kernels are written as their two factors (`bertjax_lowrank` in config.json)
    and multiplied out by `dequantize=True`.
    """
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = jax.device_get(params)
    if dequantize:
        params = convert.dequantize(params)
    sizes = model.config.intermediate_sizes
    if sizes:
        params = resize_ffn(params, [max(sizes)] * len(sizes))
    if any(model.config.pruned_heads):
        params = resize_heads(params, model.config, pad=True)
    state = convert.to_hf_state_dict(params, prefix_encoder=model.head is not None)
    hf = model.config.to_hf()
    hf["architectures"] = [_ARCHITECTURES[model.head]]
    if model.head in ("classification", "regression"):
        n = model.num_labels_out
        names = list(labels) if labels else [f"LABEL_{i}" for i in range(n)]
        hf["id2label"] = {str(i): name for i, name in enumerate(names)}
        hf["label2id"] = {name: i for i, name in enumerate(names)}
        hf["num_labels"] = n
        if model.head == "regression":
            hf["problem_type"] = "regression"
    hf["torch_dtype"] = "float32"
    if convert.has_quantized(params):
        hf["bertjax_quantization"] = quantization_info(params)
    if convert.has_factorized(params):
        hf["bertjax_lowrank"] = lowrank_info(params)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    if isinstance(tokenizer, (str, Path)):
        source = resolve(tokenizer)
        for name in TOKENIZER_FILES:
            if (source / name).exists():
                shutil.copy(source / name, out / name)
    elif tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out
