"""BERT encoder in Flax linen, with Hugging Face parameter names.

Every call returns `(outputs, intermediates)`. Intermediates are collected
only when named in `collect`, under stable keys that distillation and
pruning read:
  `embeddings`          [B, T, H]   embedding-layer output
  `hidden/{i}`          [B, T, H]   output of layer i
  `attn_scores/{i}`     [B, N, T, T] scaled q.k scores before masking/softmax
  `attn_probs/{i}`      [B, N, T, T] attention probabilities (after head_mask)
  `ffn_act/{i}`         [B, T, I]   FFN activation (after ffn_mask)
  `token_prob/{i}`      [B, T]      token reduction: keep probability before layer i
  `token_mask`          [B, T]      token reduction: the real tokens (bool)
  `token_keep/{i}`      [B, T]      token reduction: tokens kept from layer i on (bool)
`i` is always the layer's index in the full model, also when `layers` skips some.

Compression methods change the forward pass through one argument,
`interventions=` (`bertjax.models.interventions.Interventions`: head and FFN
masks, which layers run, Theseus module replacing, how matmuls run, which
tokens stay). Each
module reads the field it acts on; `LayerStack` gives each layer its slice.
Activation statistics that the matmul intervention returns are written to the
mutable `quant_stats` collection (apply with `mutable=["quant_stats"]`).

Stored int8 (`methods/quant/storage.py`): a Dense `kernel` or an `embedding` table
may be a dict `{"qvalue": int8, "scale": float32[, "input_scale"]}` instead of an
array; `Dense` then multiplies as the matmul intervention says (`Matmul.stored_int8`:
int8 x int8 by default, bf16 weight-only with `BFLOAT16`) and `Embed` dequantizes the
rows it gathers. Float params run exactly as before.

Factorized (`methods/lowrank/`): a Dense `kernel` may be `{"u": [in, r], "v": [r, out]}`;
`Dense` then runs two products, `(x @ u) @ v`, each as the matmul intervention's
`dot_general` (fewer FLOPs than `x @ W` only when r < in * out / (in + out)).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype

from bertjax.models import convert, fused_attention
from bertjax.models.config import BertConfig
from bertjax.models.dropout import Dropout
from bertjax.models.interventions import (
    DENSE_SITE,
    NONE,
    STATS,
    Interventions,
    dot_general_of,
    matmul_of,
)

Array = jax.Array
COLLECTABLE = ("embeddings", "hidden", "attn_scores", "attn_probs", "ffn_act", "tokens")
_MASKED = float(jnp.finfo(jnp.float32).min)
QKV = ("query", "key", "value")
_ACTIVATIONS = {
    # jax.nn.gelu's erfc form. HF's erf form is ~2.5x cheaper on its own but changes how
    # XLA:CPU fuses the FFN: 0.89x the fp32 forward at batch 32, 1.05x the bf16 one.
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}
# Where the FFN's product is stored-int8 (our VNNI kernel, a custom call XLA cannot fuse
# into), GELU is a fusion of its own and HF's erf form is the cheaper one: 0.96x the int8
# forward's time at batch 32 (benchmarks/results/runtime.md, session 14).
_GELU_ERF = lambda x: 0.5 * x * (1 + jax.lax.erf(x * (1 / np.sqrt(2)).astype(x.dtype)))  # noqa: E731


def _init(config: BertConfig):
    return nn.initializers.normal(stddev=0.02)


def _layer_norm(module: nn.Module, name: str = "LayerNorm") -> nn.LayerNorm:
    # Two-pass variance: the fast E[x^2]-E[x]^2 form costs ~1e-5 of HF parity.
    return nn.LayerNorm(
        module.config.layer_norm_eps,
        dtype=module.dtype,
        param_dtype=module.param_dtype,
        use_fast_variance=False,
        name=name,
    )


class MaskedLayerNorm(nn.Module):
    """LayerNorm over the widths where `mask` [H] is set, zero elsewhere: the first-h
    slice's LayerNorm, at full width (same params `scale`, `bias` as `nn.LayerNorm`)."""

    epsilon: float = 1e-12
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, mask):
        width = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (width,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (width,), self.param_dtype)
        x = x.astype(jnp.float32)
        keep = mask.astype(jnp.float32)
        count = jnp.maximum(jnp.sum(keep), 1.0)
        mean = jnp.sum(x * keep, axis=-1, keepdims=True) / count
        centered = (x - mean) * keep
        variance = jnp.sum(jnp.square(centered), axis=-1, keepdims=True) / count
        y = centered * jax.lax.rsqrt(variance + self.epsilon) * scale + bias
        return (y * keep).astype(self.dtype)


def layer_norm(module: nn.Module, x, interventions, name: str = "LayerNorm"):
    """The block's LayerNorm of `x`; over the `hidden_mask` widths only when one is set."""
    mask = interventions.hidden_mask if interventions is not None else None
    if mask is None:
        return _layer_norm(module, name)(x)
    cfg = module.config
    norm = MaskedLayerNorm(cfg.layer_norm_eps, module.dtype, module.param_dtype, name=name)
    return norm(x, mask)


def operand(module: nn.Module, x: Array, site: str, interventions: Interventions) -> Array:
    """`x` as the matmul intervention presents it; its statistic (if any) is stored in
    the `quant_stats` collection under the module's path and `site`, when mutable."""
    matmul = interventions.matmul
    if matmul is None:
        return x
    x, statistic = matmul.operand(x, "/".join((*module.path, site)))
    if statistic is not None and module.is_mutable_collection(STATS):
        lo, hi = statistic
        seen = jnp.ones((), jnp.float32)
        module.put_variable(STATS, site, {"lo": lo, "hi": hi, "seen": seen})
    return x


def attention_bias(attention_mask: Array) -> Array:
    """The additive mask over keys [B, 1, 1, T]: 0 where attended, float32's minimum
    where padded (`attention_mask` [B, T], nonzero = a real token)."""
    return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min).astype(
        jnp.float32
    )


_QK = (((3,), (3,)), ((0, 1), (0, 1)))  # q [B, N, T, D] . k [B, N, S, D] -> [B, N, T, S]


def masked_scores(q: Array, k: Array, mask_bias: Array, dot) -> Array:
    """`q . k + mask_bias` in float32 for a per-key mask ([B, 1, 1, S]), the mask entering
    the product as one more column (`[q, 1] . [k, bias]`).

    Why: XLA:CPU runs q.k, softmax and probs.v as one YNNPACK fusion that takes the mask
    as a materialized [B, N, T, S] operand (13 MB for 6 heads at batch 32); as a column it
    costs one more step of the product. 3-layer int8 stack, batch 32: -13 % of the forward
    (benchmarks/results/runtime.md, session 14). Not for a quantizing matmul (it would
    see the extra column) nor where raw scores are needed (they stay `q . k`)."""
    b, n, s = k.shape[0], k.shape[1], k.shape[2]
    ones = jnp.ones((*q.shape[:-1], 1), q.dtype)
    bias = jnp.broadcast_to(mask_bias.reshape(b, 1, s, 1), (b, n, s, 1)).astype(k.dtype)
    return dot(jnp.concatenate([q, ones], -1), jnp.concatenate([k, bias], -1), _QK).astype(
        jnp.float32
    )


class BertModule(nn.Module):
    """Base of every BERT block: the architecture, compute and parameter dtypes."""

    config: BertConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    # Index of the transformer layer a block belongs to (its head count and
    # FFN width may differ from other layers' after structured pruning).
    layer: int = 0

    def kwargs(self) -> dict:
        """The fields, to build a child block with the same settings."""
        return dict(
            config=self.config, dtype=self.dtype, param_dtype=self.param_dtype, layer=self.layer
        )


def _stored(module: nn.Module, name: str) -> dict | None:
    """The module's param `name` when it is in a stored form: int8 or factorized
    (`convert.is_stored`)."""
    if module.has_variable("params", name):
        value = module.get_variable("params", name)
        if convert.is_stored(value):
            return value
    return None


def dense_product(x: Array, kernel, interventions: Interventions, dtype) -> Array:
    """`x @ kernel` as the matmul intervention runs it: a stored-int8 kernel by its
    `stored_int8` product, a factorized one as `(x @ u) @ v`, a float one by its
    `dot_general` in `dtype` (no bias)."""
    if convert.is_quantized(kernel):
        return matmul_of(interventions).stored_int8(x, kernel).astype(dtype)
    if convert.is_factorized(kernel):
        inner = dense_product(x, kernel[convert.U], interventions, dtype)
        return dense_product(inner, kernel[convert.V], interventions, dtype)
    x, kernel = promote_dtype(x, kernel, dtype=dtype)
    return dot_general_of(interventions)(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


class Dense(nn.Module):
    """`nn.Dense` (same params, same arithmetic) whose matmul the interventions set.

    A stored-int8 kernel (see the module doc) runs as the matmul intervention's
    `stored_int8` product (`models/int8.py`; the operand intervention still sees the input);
    a factorized one as two products."""

    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x, interventions: Interventions = NONE):
        kernel = _stored(self, "kernel")
        if kernel is not None:
            shape = convert.shape_of(kernel)
            if shape != (x.shape[-1], self.features):
                raise ValueError(
                    f"{'/'.join(self.path)}: stored kernel {shape} for input {x.shape}"
                )
        else:
            kernel = self.param(
                "kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype
            )
            (x,) = promote_dtype(x, dtype=self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x = operand(self, x, DENSE_SITE, interventions)
        y = dense_product(x, kernel, interventions, self.dtype)
        return y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,)).astype(self.dtype)


def dense(module: BertModule, features: int, name: str) -> Dense:
    return Dense(
        features,
        dtype=module.dtype,
        param_dtype=module.param_dtype,
        kernel_init=_init(module.config),
        name=name,
    )


class Embed(nn.Module):
    """`nn.Embed` (same param `embedding`, same arithmetic: `jnp.take` of the table) that
    also runs a stored-int8 table `{qvalue [V, H], scale [V]}`: the gathered int8 rows
    times their scales."""

    num_embeddings: int
    features: int
    dtype: Any = None
    param_dtype: Any = jnp.float32
    embedding_init: Any = nn.initializers.normal(stddev=1.0)

    @nn.compact
    def __call__(self, inputs):
        if not jnp.issubdtype(inputs.dtype, jnp.integer):
            raise ValueError("Input type must be an integer or unsigned integer.")
        stored = _stored(self, "embedding")
        if stored is not None:
            rows = jnp.take(stored[convert.QVALUE], inputs, axis=0).astype(jnp.float32)
            scale = jnp.take(jnp.asarray(stored[convert.SCALE], jnp.float32), inputs, axis=0)
            return (rows * scale[..., None]).astype(self.dtype or jnp.float32)
        table = self.param(
            "embedding",
            self.embedding_init,
            (self.num_embeddings, self.features),
            self.param_dtype,
        )
        (table,) = promote_dtype(table, dtype=self.dtype, inexact=False)
        if self.num_embeddings == 1:
            return jnp.broadcast_to(table, inputs.shape + (self.features,))
        return jnp.take(table, inputs, axis=0)


class Embeddings(BertModule):
    @nn.compact
    def __call__(self, input_ids, token_type_ids, deterministic: bool, interventions=NONE):
        cfg = self.config
        embed = lambda n, name: Embed(  # noqa: E731
            n,
            cfg.hidden_size,
            embedding_init=_init(cfg),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )
        positions = jnp.arange(input_ids.shape[-1])[None, :]
        x = (
            embed(cfg.vocab_size, "word_embeddings")(input_ids)
            + embed(cfg.max_position_embeddings, "position_embeddings")(positions)
            + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids)
        )
        x = layer_norm(self, x, interventions)
        return Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class SelfAttention(BertModule):
    """HF `attention.self`: query/key/value projections and scaled dot-product attention.

    Reads `interventions.head_mask` (this layer's [N]) and `interventions.matmul`.
    When the matmul intervention allows (`fusable_projections`), q, k and v come from
    one product with the three kernels side by side (params keep HF's names; the
    kernels are concatenated per call). Same outputs; measured ~1.03-1.10x at batch 1,
    neutral at batch 32 (benchmarks/results/runtime.md).
    """

    @nn.compact
    def __call__(self, x, mask_bias, deterministic: bool, interventions: Interventions):
        cfg = self.config
        dot = dot_general_of(interventions)
        b, t, _ = x.shape
        n, d = cfg.heads_in_layer(self.layer), cfg.head_dim

        def heads(y):
            return y.reshape(b, t, n, d).transpose(0, 2, 1, 3)  # [B, N, T, D]

        def site(value, name):
            return operand(self, value, name, interventions)

        projected = None if self.is_initializing() else self.fused_projections(x, interventions)
        fused = None if projected is None else projected[0] + projected[1]
        if fused is None:
            q, k, v = (heads(dense(self, n * d, name)(x, interventions)) for name in QKV)
        else:
            q, k, v = (heads(y) for y in jnp.split(fused, 3, axis=-1))
        # 1/sqrt(d) on q, not on the [B, N, T, T] scores: XLA:CPU's attention fusion
        # would read a materialized broadcast of the constant (session 14).
        q = q * (1 / jnp.sqrt(d)).astype(q.dtype)
        scores = dot(site(q, "qk_query"), site(k, "qk_key"), _QK)
        per_key = mask_bias.shape == (b, 1, 1, t)
        added = lambda bias: (scores + bias).astype(jnp.float32)  # noqa: E731
        if deterministic and per_key and matmul_of(interventions).fusable_projections:
            # The column form on CPU only: measured there (XLA:GPU/TPU fuse the add).
            biased = jax.lax.platform_dependent(
                mask_bias, cpu=lambda bias: masked_scores(q, k, bias, dot), default=added
            )
        else:
            biased = added(mask_bias)
        probs = jax.nn.softmax(biased, axis=-1)
        probs = probs.astype(self.dtype)
        probs = Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
        head_mask = interventions.head_mask
        if head_mask is not None:
            probs = probs * head_mask[:n].astype(probs.dtype)[None, :, None, None]
        context = dot(
            site(probs, "pv_probs"), site(v, "pv_value"), (((3,), (2,)), ((0, 1), (0, 1)))
        )  # [B, N, T, D]
        context = context.transpose(0, 2, 1, 3).reshape(b, t, n * d)
        if (
            fused is not None and deterministic and head_mask is None
            and matmul_of(interventions).fused_attention
            and per_key and fused_attention.supports(d)
        ):  # fmt: skip
            # Our CPU kernel from the fused projection; the scores and probs above stay for
            # `collect` (when nothing collects them XLA drops them, and that context too).
            product, bias = projected  # the kernel adds q|k|v's bias as it reads them
            context = fused_attention.attention(product, mask_bias.reshape(b, t), n, bias)
            context = context.astype(self.dtype)
        return context, scores, probs

    def fused_projections(self, x, interventions: Interventions) -> tuple[Array, Array] | None:
        """`(x @ [Wq Wk Wv], [bq bk bv])` ([B, T, 3 N D], [3 N D]): one product, or None where the
        three cannot share one: an intervention that sees each Dense's input (quantizer
        statistics per site), mixed float/int8 kernels, per-site static input scales, or
        factorized kernels (each is two products of its own rank)."""
        if not matmul_of(interventions).fusable_projections:
            return None
        params = self.variables.get("params", {})
        if not all(name in params for name in QKV):
            return None
        kernels = [params[name]["kernel"] for name in QKV]
        if any(convert.is_factorized(kernel) for kernel in kernels):
            return None
        bias = jnp.concatenate([params[name]["bias"] for name in QKV]).astype(self.dtype)
        stored = [convert.is_quantized(kernel) for kernel in kernels]
        if all(stored):
            if any(convert.INPUT_SCALE in kernel for kernel in kernels):
                return None
            kernel = {
                key: jnp.concatenate([k[key] for k in kernels], axis=-1)
                for key in (convert.QVALUE, convert.SCALE)
            }
        elif any(stored):
            return None
        else:
            kernel = jnp.concatenate(kernels, axis=-1)
        return dense_product(x, kernel, interventions, self.dtype), bias


class DenseResidualNorm(BertModule):
    """HF `attention.output` / `output`: Dense, dropout, LayerNorm(x + residual)."""

    @nn.compact
    def __call__(self, x, residual, deterministic: bool, interventions: Interventions):
        cfg = self.config
        params = self.variables.get("params", {})
        kernel = params.get("dense", {}).get("kernel")
        if (
            deterministic
            and convert.is_quantized(kernel)
            and interventions.hidden_mask is None
            and self.dtype == jnp.float32
            and "LayerNorm" in params
        ):  # one op where the matmul intervention fuses it (`Matmul.stored_int8_norm`)
            out = matmul_of(interventions).stored_int8_norm(
                x, kernel, params["dense"]["bias"], residual, params["LayerNorm"],
                cfg.layer_norm_eps,
            )  # fmt: skip
            if out is not None:
                return out
        x = dense(self, cfg.hidden_size, "dense")(x, interventions)
        x = Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
        return layer_norm(self, x + residual, interventions)


class Attention(BertModule):
    @nn.compact
    def __call__(self, x, mask_bias, deterministic: bool, interventions: Interventions):
        kw = self.kwargs()
        context, scores, probs = SelfAttention(**kw, name="self")(
            x, mask_bias, deterministic, interventions
        )
        out = DenseResidualNorm(**kw, name="output")(context, x, deterministic, interventions)
        return out, scores, probs


class Intermediate(BertModule):
    """HF `intermediate`: the FFN's expanding Dense and its activation (`ffn_mask` [I])."""

    @nn.compact
    def __call__(self, x, interventions: Interventions):
        cfg = self.config
        y = dense(self, cfg.ffn_size(self.layer), "dense")(x, interventions)
        kernel = self.variables.get("params", {}).get("dense", {}).get("kernel")
        if cfg.hidden_act == "gelu" and convert.is_quantized(kernel):
            act = _GELU_ERF(y)
        else:
            act = _ACTIVATIONS[cfg.hidden_act](y)
        ffn_mask = interventions.ffn_mask
        if ffn_mask is not None:
            act = act * ffn_mask[: act.shape[-1]].astype(act.dtype)
        return act


class Layer(BertModule):
    """One transformer block: self-attention then FFN, post-LayerNorm as in BERT.

    `interventions` is this layer's slice (`Interventions.at_layer`).
    """

    @nn.compact
    def __call__(self, x, mask_bias, *, deterministic: bool, interventions: Interventions = NONE):
        kw = self.kwargs()
        attn_out, scores, probs = Attention(**kw, name="attention")(
            x, mask_bias, deterministic, interventions
        )
        act = Intermediate(**kw, name="intermediate")(attn_out, interventions)
        out = DenseResidualNorm(**kw, name="output")(act, attn_out, deterministic, interventions)
        return out, {"attn_scores": scores, "attn_probs": probs, "ffn_act": act}


class LayerStack(BertModule):
    """HF `encoder.layer`: layers named "0", "1", ...; runs those named in `layers`."""

    @nn.compact
    def __call__(self, x, mask_bias, *, deterministic, layers, interventions, collect):
        inter = {}
        tokens = interventions.tokens
        keep = None if tokens is None else mask_bias[:, 0, 0, :] == 0
        if tokens is not None and "tokens" in collect:
            inter["token_mask"] = keep
        for i in layers:
            if tokens is not None and i in tokens.layers:  # token reduction: keys dropped
                keep, probability = tokens.select(tokens.layers.index(i), x, keep)
                mask_bias = jnp.where(keep[:, None, None, :], mask_bias, _MASKED)
                if "tokens" in collect:
                    inter[f"token_prob/{i}"], inter[f"token_keep/{i}"] = probability, keep
            out, extra = Layer(**{**self.kwargs(), "layer": i}, name=str(i))(
                x, mask_bias, deterministic=deterministic, interventions=interventions.at_layer(i)
            )
            # A layer off in `layer_mask` passes its input through (supernet depth as data).
            runs = None if interventions.layer_mask is None else interventions.layer_mask[i]
            x = out if runs is None else jnp.where(runs, out, x)
            if tokens is not None and tokens.probe is not None and i == tokens.probe_layer:
                x = x + tokens.probe
            if "hidden" in collect:
                inter[f"hidden/{i}"] = x
            for key, value in extra.items():
                if key in collect:
                    inter[f"{key}/{i}"] = value
        return x, inter


class Encoder(nn.Module):
    """HF `encoder`: the layer stack under `encoder/layer/{i}`; with
    `interventions.replace`, the Theseus successors under `encoder/successor/{m}`.
    Replaced modules run without head/FFN masks and collect no intermediates.

    Not a `BertModule`: its submodule `layer` would clash with the `layer` field.
    """

    config: BertConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        kw = dict(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype)
        self.layer = LayerStack(**kw)
        self.successor = LayerStack(**kw)

    def __call__(self, x, mask_bias, *, deterministic, layers, interventions, collect):
        replace = interventions.replace
        if replace is None:
            return self.layer(
                x,
                mask_bias,
                deterministic=deterministic,
                layers=layers,
                interventions=interventions,
                collect=collect,
            )
        inner = interventions.replace_fields(head_mask=None, ffn_mask=None, replace=None)
        run = dict(deterministic=deterministic, interventions=inner, collect=())
        # Branches reach the stacks through the module argument (nn.cond's contract), so
        # the variables they write (activation statistics) are lifted, not leaked.
        for m, members in enumerate(replace.modules):
            x = nn.cond(
                replace.use_successor[m],
                lambda mdl, y, m=m: mdl.successor(y, mask_bias, layers=(m,), **run)[0],
                lambda mdl, y, members=members: mdl.layer(y, mask_bias, layers=members, **run)[0],
                self,
                x,
            )
        return x, {}


class Pooler(BertModule):
    """HF `pooler`: tanh(Dense(hidden state of [CLS]))."""

    @nn.compact
    def __call__(self, x, interventions: Interventions):
        pooled = jnp.tanh(dense(self, self.config.hidden_size, "dense")(x[:, 0], interventions))
        if interventions.hidden_mask is not None:
            pooled = pooled * interventions.hidden_mask.astype(pooled.dtype)
        return pooled


class BertEncoder(BertModule):
    """Embeddings, transformer layers and (optionally) the pooler.

    Returns `(outputs, inter)`: outputs has `last_hidden_state` [B, T, H] and,
    with a pooler, `pooler_output` [B, H].
    """

    @nn.compact
    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        *,
        deterministic: bool = True,
        collect: Sequence[str] = (),
        interventions: Interventions | None = None,
    ):
        cfg = self.config
        interventions = NONE if interventions is None else interventions
        unknown = set(collect) - set(COLLECTABLE)
        if unknown:
            raise ValueError(f"unknown intermediates {sorted(unknown)}; known: {COLLECTABLE}")
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        layers = interventions.layers
        layers = tuple(range(cfg.num_hidden_layers)) if layers is None else tuple(layers)
        if any(not 0 <= i < cfg.num_hidden_layers for i in layers):
            raise ValueError(f"layers {layers} out of range for {cfg.num_hidden_layers} layers")
        kw = self.kwargs()

        x = Embeddings(**kw, name="embeddings")(
            input_ids, token_type_ids, deterministic, interventions
        )
        inter = {"embeddings": x} if "embeddings" in collect else {}
        mask_bias = attention_bias(attention_mask)
        encoder = Encoder(self.config, self.dtype, self.param_dtype, name="encoder")
        x, layer_inter = encoder(
            x,
            mask_bias,
            deterministic=deterministic,
            layers=layers,
            interventions=interventions,
            collect=tuple(collect),
        )
        inter.update(layer_inter)
        outputs = {"last_hidden_state": x}
        if cfg.add_pooler:
            outputs["pooler_output"] = Pooler(**kw, name="pooler")(x, interventions)
        return outputs, inter
