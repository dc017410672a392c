"""BERT encoder in Flax linen, with Hugging Face parameter names.

Every call returns `(outputs, intermediates)`. Intermediates are collected
only when named in `collect`, under stable keys that distillation and
pruning read:
  `embeddings`          [B, T, H]   embedding-layer output
  `hidden/{i}`          [B, T, H]   output of layer i
  `attn_scores/{i}`     [B, N, T, T] scaled q.k scores before masking/softmax
  `attn_probs/{i}`      [B, N, T, T] attention probabilities (after head_mask)
  `ffn_act/{i}`         [B, T, I]   FFN activation (after ffn_mask)
`i` is always the layer's index in the full model, also when `layers` skips some.

Overrides used by compression methods (all optional):
  head_mask [L, N]   multiplies each head's attention probabilities (HF semantics)
  ffn_mask  [L, I]   multiplies FFN activations (neuron pruning)
  layers    tuple    indices of the layers that run, in order (layer dropping)
  dot_general        replaces `jax.lax.dot_general` in every Dense layer and in
                     both attention matmuls (activation quantization)
  replace   (modules, use_successor)  module replacing (BERT-of-Theseus): `modules` is a
                     tuple of layer-index tuples; module m runs either those layers or the
                     single successor layer `encoder/successor/{m}`, as the traced bool
                     `use_successor[m]` says (`nn.cond`: only one branch runs). Replaced
                     modules collect no per-layer intermediates.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.models.config import BertConfig
from bertjax.models.dropout import Dropout

Array = jax.Array
DotGeneral = Callable[..., Array]
COLLECTABLE = ("embeddings", "hidden", "attn_scores", "attn_probs", "ffn_act")

_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


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


class Embeddings(BertModule):
    @nn.compact
    def __call__(self, input_ids, token_type_ids, deterministic: bool):
        cfg = self.config
        embed = lambda n, name: nn.Embed(  # noqa: E731
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
        x = _layer_norm(self)(x)
        return Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


def _dense(module: nn.Module, features: int, name: str, dot_general: DotGeneral | None):
    return nn.Dense(
        features,
        kernel_init=_init(module.config),
        dtype=module.dtype,
        param_dtype=module.param_dtype,
        dot_general=dot_general,
        name=name,
    )


class SelfAttention(BertModule):
    """HF `attention.self`: query/key/value projections and scaled dot-product attention."""

    @nn.compact
    def __call__(self, x, mask_bias, head_mask, deterministic: bool, dot_general):
        cfg = self.config
        dot = dot_general or jax.lax.dot_general
        b, t, _ = x.shape
        n, d = cfg.heads_in_layer(self.layer), cfg.head_dim

        def project(name):
            y = _dense(self, n * d, name, dot_general)(x)
            return y.reshape(b, t, n, d).transpose(0, 2, 1, 3)  # [B, N, T, D]

        q, k, v = project("query"), project("key"), project("value")
        scores = dot(q, k, (((3,), (3,)), ((0, 1), (0, 1)))) / jnp.sqrt(d).astype(q.dtype)
        probs = jax.nn.softmax((scores + mask_bias).astype(jnp.float32), axis=-1)
        probs = probs.astype(self.dtype)
        probs = Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
        if head_mask is not None:
            probs = probs * head_mask[:n].astype(probs.dtype)[None, :, None, None]
        context = dot(probs, v, (((3,), (2,)), ((0, 1), (0, 1))))  # [B, N, T, D]
        context = context.transpose(0, 2, 1, 3).reshape(b, t, n * d)
        return context, scores, probs


class DenseResidualNorm(BertModule):
    """HF `attention.output` / `output`: Dense, dropout, LayerNorm(x + residual)."""

    @nn.compact
    def __call__(self, x, residual, deterministic: bool, dot_general):
        cfg = self.config
        x = _dense(self, cfg.hidden_size, "dense", dot_general)(x)
        x = Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
        return _layer_norm(self)(x + residual)


class Attention(BertModule):
    @nn.compact
    def __call__(self, x, mask_bias, head_mask, deterministic: bool, dot_general):
        kw = self.kwargs()
        context, scores, probs = SelfAttention(**kw, name="self")(
            x, mask_bias, head_mask, deterministic, dot_general
        )
        out = DenseResidualNorm(**kw, name="output")(context, x, deterministic, dot_general)
        return out, scores, probs


class Intermediate(BertModule):
    """HF `intermediate`: the FFN's expanding Dense and its activation."""

    @nn.compact
    def __call__(self, x, ffn_mask, dot_general):
        cfg = self.config
        act = _ACTIVATIONS[cfg.hidden_act](
            _dense(self, cfg.ffn_size(self.layer), "dense", dot_general)(x)
        )
        if ffn_mask is not None:
            act = act * ffn_mask[: act.shape[-1]].astype(act.dtype)
        return act


class Layer(BertModule):
    """One transformer block: self-attention then FFN, post-LayerNorm as in BERT."""

    @nn.compact
    def __call__(
        self,
        x,
        mask_bias,
        *,
        deterministic: bool,
        head_mask=None,
        ffn_mask=None,
        dot_general: DotGeneral | None = None,
    ):
        kw = self.kwargs()
        attn_out, scores, probs = Attention(**kw, name="attention")(
            x, mask_bias, head_mask, deterministic, dot_general
        )
        act = Intermediate(**kw, name="intermediate")(attn_out, ffn_mask, dot_general)
        out = DenseResidualNorm(**kw, name="output")(act, attn_out, deterministic, dot_general)
        return out, {"attn_scores": scores, "attn_probs": probs, "ffn_act": act}


class LayerStack(BertModule):
    """HF `encoder.layer`: layers named "0", "1", ...; runs those named in `layers`."""

    @nn.compact
    def __call__(
        self, x, mask_bias, *, deterministic, layers, head_mask, ffn_mask, dot_general, collect
    ):
        inter = {}
        for i in layers:
            x, extra = Layer(**{**self.kwargs(), "layer": i}, name=str(i))(
                x,
                mask_bias,
                deterministic=deterministic,
                head_mask=None if head_mask is None else head_mask[i],
                ffn_mask=None if ffn_mask is None else ffn_mask[i],
                dot_general=dot_general,
            )
            if "hidden" in collect:
                inter[f"hidden/{i}"] = x
            for key, value in extra.items():
                if key in collect:
                    inter[f"{key}/{i}"] = value
        return x, inter


class Encoder(BertModule):
    """HF `encoder`: the layer stack under `encoder/layer/{i}`; with `replace`, the
    Theseus successors under `encoder/successor/{m}`."""

    @nn.compact
    def __call__(self, x, mask_bias, *, replace=None, **kwargs):
        if replace is None:
            return LayerStack(**self.kwargs(), name="layer")(x, mask_bias, **kwargs)
        modules, use_successor = replace
        stack = LayerStack(**self.kwargs(), name="layer")
        successors = LayerStack(**self.kwargs(), name="successor")
        deterministic, dot_general = kwargs["deterministic"], kwargs["dot_general"]
        run = dict(deterministic=deterministic, head_mask=None, ffn_mask=None, collect=())

        for m, layers in enumerate(modules):
            x = nn.cond(
                use_successor[m],
                lambda _, y, m=m: successors(
                    y, mask_bias, layers=(m,), **run, dot_general=dot_general
                )[0],
                lambda _, y, layers=layers: stack(
                    y, mask_bias, layers=layers, **run, dot_general=dot_general
                )[0],
                self,
                x,
            )
        return x, {}


class Pooler(BertModule):
    """HF `pooler`: tanh(Dense(hidden state of [CLS]))."""

    @nn.compact
    def __call__(self, x, dot_general):
        return jnp.tanh(_dense(self, self.config.hidden_size, "dense", dot_general)(x[:, 0]))


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
        head_mask=None,
        ffn_mask=None,
        layers: Sequence[int] | None = None,
        dot_general: DotGeneral | None = None,
        replace=None,
    ):
        cfg = self.config
        unknown = set(collect) - set(COLLECTABLE)
        if unknown:
            raise ValueError(f"unknown intermediates {sorted(unknown)}; known: {COLLECTABLE}")
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        layers = tuple(range(cfg.num_hidden_layers)) if layers is None else tuple(layers)
        if any(not 0 <= i < cfg.num_hidden_layers for i in layers):
            raise ValueError(f"layers {layers} out of range for {cfg.num_hidden_layers} layers")
        kw = self.kwargs()

        x = Embeddings(**kw, name="embeddings")(input_ids, token_type_ids, deterministic)
        inter = {"embeddings": x} if "embeddings" in collect else {}
        # Additive mask over keys: 0 where attended, the dtype's minimum where padded.
        mask_bias = jnp.where(
            attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min
        ).astype(jnp.float32)
        x, layer_inter = Encoder(**kw, name="encoder")(
            x,
            mask_bias,
            deterministic=deterministic,
            layers=layers,
            head_mask=head_mask,
            ffn_mask=ffn_mask,
            dot_general=dot_general,
            collect=tuple(collect),
            replace=replace,
        )
        inter.update(layer_inter)
        outputs = {"last_hidden_state": x}
        if cfg.add_pooler:
            outputs["pooler_output"] = Pooler(**kw, name="pooler")(x, dot_general)
        return outputs, inter
