"""What a compression method changes in the model's forward pass: one struct.

`BertModel.__call__(..., interventions=Interventions(...))` receives every
change at once; each module reads the field it acts on, and `LayerStack`
hands layer `i` its own slice of the per-layer fields (`at_layer`). Adding an
intervention means: a field here, and code in the one module that uses it.

Fields (all optional; `None` = the plain BERT forward):
  head_mask [L, N]     multiplies each head's attention probabilities (HF semantics)
  ffn_mask  [L, I]     multiplies FFN activations (neuron pruning)
  layers    tuple      indices of the layers that run, in order (layer dropping)
  hidden_mask [H]      the hidden widths that exist (AutoTinyBERT supernet): LayerNorms
                       normalise over them only and zero the rest, the pooler too
  layer_mask  [L]      per layer, whether it runs (else its input passes through): depth
                       as data, one compiled graph for every sampled depth
  replace   Replace    module replacing (BERT-of-Theseus): which layers form a module
                       and, per module, whether its successor runs (`nn.cond`)
  matmul    Matmul     how every matmul runs: each Dense layer and both attention
                       products call `matmul.operand` on their activation operands and
                       `matmul.dot_general` for the product (quantization, bf16);
                       a Dense with a stored-int8 kernel calls `matmul.stored_int8`
  tokens    TokenSelection  token reduction (TR-BERT): before each of its `layers`,
                       `LayerStack` asks it which tokens stay (`select`); dropped tokens
                       are masked out as keys for every later layer (fixed shapes)

Statistics: when `matmul.operand` returns a statistic for an operand, the
module stores it in the mutable Flax collection `quant_stats` under its own
path and the operand's site name (`SITE_NAMES`); `matmul_sites(params)` lists
every site the model can visit, so callers can pre-populate the collection
(needed under `nn.cond`, whose branches must return the same variables).

This module holds no Flax modules: methods import it to build interventions.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from bertjax.models import bfloat16, int8

Array = jax.Array
STATS = "quant_stats"  # the Flax collection activation statistics are written to
# Operand sites: the input of every Dense; q, k of the q.k product, probs, v of probs.v.
DENSE_SITE = "input"
ATTENTION_SITES = ("qk_query", "qk_key", "pv_probs", "pv_value")


class Matmul:
    """How the model's matmuls run; subclass and override what changes.

    `operand(x, site) -> (x, statistic or None)` is called on each activation
    operand (`site` = the module's '/'-joined path + '/' + site name);
    `dot_general` computes the product (a `jax.lax.dot_general` replacement).
    """

    # True when `operand` ignores its site, so that products sharing an input (q, k, v)
    # may run as one; interventions that record or quantize per site leave it False.
    fusable_projections: bool = False
    # True when attention (q.k, softmax, probs.v) may run as one float32 op that never
    # exposes its operands (`models/fused_attention.py`, at inference).
    fused_attention: bool = False

    def operand(self, x: Array, site: str) -> tuple[Array, Any]:
        return x, None

    def dot_general(self, lhs, rhs, dimension_numbers, precision=None, **kwargs):
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision, **kwargs)

    def stored_int8(self, x: Array, kernel: dict) -> Array:
        """`x @ kernel` for a Dense whose kernel is stored in int8: W8A8 (`int8_dense`)."""
        return int8.int8_dense(x, kernel)

    def stored_int8_norm(self, x, kernel: dict, bias, residual, norm: dict, eps: float):
        """LayerNorm(`stored_int8(x, kernel)` + bias + residual) as one op at inference
        (BERT's `output` blocks), or None: the model then runs the parts. None here:
        an intervention that sees or changes operands must see this product's too."""
        return None


class Float32(Matmul):
    """The plain float32 forward (what the model does with no matmul intervention)."""

    fusable_projections = True
    fused_attention = True

    def stored_int8_norm(self, x, kernel: dict, bias, residual, norm: dict, eps: float):
        return int8.int8_dense_norm(x, kernel, bias, residual, norm, eps)


class Bfloat16(Matmul):
    """bfloat16 matmuls: both operands of every product cast to bfloat16,
    float32 accumulation and output (LayerNorm, softmax, GELU and residuals stay
    float32); a stored-int8 kernel runs weight-only (W8A16, `int8.weight_only_dense`).
    In training the Dense products' backward runs in bfloat16 too (`models/bfloat16.py`),
    with float32 params and gradients: mixed-precision training.

    On CPUs with AVX-512 BF16 or AMX the product runs at ~2x float32 (measured in
    benchmarks/results/runtime.md); outputs differ from float32 by bf16 rounding of the
    operands (relative ~1e-3). Use `Interventions(matmul=BFLOAT16)`.
    """

    fusable_projections = True

    def dot_general(self, lhs, rhs, dimension_numbers, precision=None, **kwargs):
        return bfloat16.dot_general(lhs, rhs, dimension_numbers)

    def stored_int8(self, x: Array, kernel: dict) -> Array:
        return int8.weight_only_dense(x, kernel)


DEFAULT_MATMUL = Float32()
BFLOAT16 = Bfloat16()
# Float32 with q, k and v as three products: one weight per product (the ONNX export, so
# that ONNX Runtime's quantizer finds every weight as a MatMul initializer).
SEPARATE_PRODUCTS = Matmul()
# Arithmetics by name (`Predictor(compute=...)`, `--compute`, `config.precision.compute`).
COMPUTE = {"fp32": DEFAULT_MATMUL, "bf16": BFLOAT16}


def compute_interventions(compute: str) -> "Interventions":
    """`Interventions(matmul=COMPUTE[compute])`; a clear error for an unknown name."""
    if compute not in COMPUTE:
        raise ValueError(f"unknown compute {compute!r}; known: {', '.join(COMPUTE)}")
    return Interventions(matmul=COMPUTE[compute])


@struct.dataclass
class Replace:
    """Theseus module replacing: `modules[m]` (layer indices) runs as one successor
    layer `encoder/successor/{m}` where `use_successor[m]` (a traced bool) is true."""

    modules: tuple[tuple[int, ...], ...] = struct.field(pytree_node=False)
    use_successor: Array


@struct.dataclass
class TokenSelection:
    """Which tokens later layers attend to (TR-BERT), decided mid-forward.

    Before layer `layers[j]`, the policy `policy(params[j], x [B, T, H]) -> [B, T]` gives
    each token's keep probability (a pure jnp function: the method owns it and its
    params). Tokens kept so far (`keep` [B, T] bool, initially the attention mask) stay
    where the action is 1; [CLS] (position 0) always stays. Actions:
      `key` None: probability >= `threshold` (evaluation);
      else Bernoulli draws from `uniform(fold_in(key, j), [B, T])` (REINFORCE);
      `guide` [B, S, T] and `guided` [B] bool: rows where `guided` keep instead the
      top round(sum of their probabilities) tokens by `guide[:, j]` among those kept
      so far (imitation of gradient importance).
    `probe` [B, T, H] (zeros) is added to the output of layer `probe_layer`: the
    gradient with respect to it is dL/d hidden (how the guide is computed).
    """

    layers: tuple[int, ...] = struct.field(pytree_node=False, default=())
    policy: Callable | None = struct.field(pytree_node=False, default=None)
    params: Any = None
    threshold: float = struct.field(pytree_node=False, default=0.5)
    key: Array | None = None
    guide: Array | None = None
    guided: Array | None = None
    probe: Array | None = None
    probe_layer: int = struct.field(pytree_node=False, default=-1)
    detach: Array | None = None  # true: the policy sees stop_gradient(x) (model frozen)

    def select(self, j: int, x: Array, keep: Array) -> tuple[Array, Array]:
        """`(keep [B, T] bool, probability [B, T] float32)` after selection `j`."""
        if self.detach is not None:
            x = jnp.where(self.detach, jax.lax.stop_gradient(x), x)
        probability = self.policy(self.params[j], x).astype(jnp.float32)
        if self.key is None:
            action = probability >= self.threshold
        else:
            noise = jax.random.uniform(jax.random.fold_in(self.key, j), probability.shape)
            action = noise < jax.lax.stop_gradient(probability)
        if self.guide is not None:
            action = jnp.where(self.guided[:, None], self._imitated(j, probability, keep), action)
        is_cls = jnp.arange(keep.shape[-1])[None, :] == 0
        return keep & (action | is_cls), probability

    def _imitated(self, j: int, probability: Array, keep: Array) -> Array:
        """The top round(sum of kept tokens' probabilities) tokens by `guide[:, j]`."""
        count = jnp.round(jnp.sum(jnp.where(keep, probability, 0.0), -1, keepdims=True))
        score = jnp.where(keep, self.guide[:, j], -jnp.inf)
        rank = jnp.argsort(jnp.argsort(-score, axis=-1), axis=-1)
        return jax.lax.stop_gradient(rank < count)


def _per_layer(**kwargs):
    return struct.field(metadata={"per_layer": True}, **kwargs)


@struct.dataclass
class Interventions:
    """Every model intervention of one forward pass (see the module docstring)."""

    head_mask: Array | None = _per_layer(default=None)
    ffn_mask: Array | None = _per_layer(default=None)
    layers: tuple[int, ...] | None = struct.field(pytree_node=False, default=None)
    hidden_mask: Array | None = None
    layer_mask: Array | None = _per_layer(default=None)
    replace: Replace | None = None
    matmul: Matmul | None = struct.field(pytree_node=False, default=None)
    tokens: TokenSelection | None = None

    def at_layer(self, i: int) -> "Interventions":
        """This struct with each per-layer field replaced by layer `i`'s slice."""
        sliced = {
            f.name: getattr(self, f.name)[i]
            for f in dataclasses.fields(self)
            if f.metadata.get("per_layer") and getattr(self, f.name) is not None
        }
        return self.replace_fields(**sliced)

    def replace_fields(self, **changes) -> "Interventions":
        return dataclasses.replace(self, **changes)

    def merge(self, other: "Interventions") -> "Interventions":
        """Both structs' fields; a field set by both is an error (two methods, one knob)."""
        changes = {}
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if theirs is None:
                continue
            if mine is not None:
                raise ValueError(f"two methods set the model intervention {f.name!r}")
            changes[f.name] = theirs
        return self.replace_fields(**changes)

    def set_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None)


NONE = Interventions()


def matmul_of(interventions: Interventions | None) -> Matmul:
    """The matmul intervention in effect (`DEFAULT_MATMUL` when none is set)."""
    matmul = interventions.matmul if interventions is not None else None
    return DEFAULT_MATMUL if matmul is None else matmul


def dot_general_of(interventions: Interventions | None) -> Callable:
    """The product the model's matmuls use."""
    return matmul_of(interventions).dot_general


def matmul_sites(params: Any) -> tuple[str, ...]:
    """Every operand site the model may visit, sorted: `{dense}/input` for each params
    dict holding a `kernel`, and the four `ATTENTION_SITES` of each dict holding
    `query`, `key` and `value` (an attention `self` block). Sites of method-owned
    params that the model never runs are listed too; they are simply never written."""
    sites = []

    def walk(tree, path):
        if not isinstance(tree, dict):
            return
        if "kernel" in tree and not isinstance(tree["kernel"], dict):
            sites.append(f"{path}/{DENSE_SITE}")
        if all(k in tree for k in ("query", "key", "value")):
            sites.extend(f"{path}/{name}" for name in ATTENTION_SITES)
        for key, value in tree.items():
            walk(value, f"{path}/{key}" if path else str(key))

    walk(params, "")
    return tuple(sorted(sites))


def site_tree(sites: tuple[str, ...], leaf: Callable[[str], Any]) -> dict:
    """Nested dicts by module path (the layout of a Flax collection), `leaf(site)` at each."""
    tree: dict = {}
    for site in sites:
        *modules, name = site.split("/")
        node = tree
        for key in modules:
            node = node.setdefault(key, {})
        node[name] = leaf(site)
    return tree


def site_of(tree: dict, site: str, default: Any = None) -> Any:
    """The entry of `site` in a `site_tree`-shaped tree (`default` where absent)."""
    node = tree
    for key in site.split("/"):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def sites_in(tree: dict, marker: str) -> tuple[str, ...]:
    """The sites of a `site_tree`: paths of the dicts that hold the key `marker`."""
    found = []

    def walk(node, path):
        if marker in node:
            found.append(path)
            return
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{path}/{key}" if path else key)

    walk(tree, "")
    return tuple(sorted(found))


def empty_stats(sites: tuple[str, ...]) -> dict:
    """The `quant_stats` collection with every site unseen: `{lo, hi, seen}` float32 zeros."""
    zero = jnp.zeros((), jnp.float32)
    return site_tree(sites, lambda _: {"lo": zero, "hi": zero, "seen": zero})
