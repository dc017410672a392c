"""The classifier's forward in pieces: embeddings, one layer, the head.

Dynamic inference runs a `BertModel` a layer at a time: early exit stops after the
layer whose exit head is confident, token reduction runs later layers on fewer
tokens. These pure functions apply the model's own blocks to their slice of the
params, so that

    x, bias = embed(model, params, ids, mask, types)
    for i in range(L): x = layer(model, params, i, x, bias)
    logits = head(model, params, x)

equals `model.apply(...)[0]["logits"]` (tested to float rounding). Each takes the
same `interventions` the whole model does (arithmetic, head/FFN masks), and each
can be jitted on its own, e.g. one executable per layer and batch bucket.
"""

import jax
import jax.numpy as jnp

from bertjax.models.bert import Dense as _Dense
from bertjax.models.bert import Embeddings, Layer, Pooler, attention_bias
from bertjax.models.interventions import NONE, Interventions

Array = jax.Array


def _kw(model) -> dict:
    return dict(config=model.config, dtype=model.dtype, param_dtype=model.param_dtype)


def _encoder(params: dict) -> dict:
    return params["bert"]


def embed(model, params: dict, input_ids, attention_mask=None, token_type_ids=None):
    """`(x [B, T, H], bias [B, 1, 1, T])`: the embedding output and the additive key mask."""
    if attention_mask is None:
        attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
        token_type_ids = jnp.zeros_like(input_ids)
    x = Embeddings(**_kw(model)).apply(
        {"params": _encoder(params)["embeddings"]}, input_ids, token_type_ids, True
    )
    return x, attention_bias(attention_mask)


def layer(
    model, params: dict, i: int, x: Array, bias: Array, interventions: Interventions = NONE
) -> Array:
    """Layer `i`'s output [B, T', H] for hidden states `x` [B, T', H] (any length T')
    and their key mask `bias` [B, 1, 1, T']."""
    out, _ = Layer(**_kw(model), layer=i).apply(
        {"params": _encoder(params)["encoder"]["layer"][str(i)]},
        x,
        bias,
        deterministic=True,
        interventions=interventions.at_layer(i),
    )
    return out


def pooled(model, params: dict, x: Array, interventions: Interventions = NONE) -> Array:
    """The pooler output [B, H] of hidden states `x` [B, T, H] (tanh Dense of [CLS])."""
    return Pooler(**_kw(model)).apply({"params": _encoder(params)["pooler"]}, x, interventions)


def head(model, params: dict, x: Array, interventions: Interventions = NONE) -> Array:
    """The task head's logits [B, labels] of the last layer's hidden states `x`."""
    features = params["classifier"]["bias"].shape[-1]
    return _Dense(features, dtype=model.dtype, param_dtype=model.param_dtype).apply(
        {"params": params["classifier"]}, pooled(model, params, x, interventions), interventions
    )


def num_layers(params: dict) -> int:
    """The number of transformer layers in `params` (`bert/encoder/layer/{i}`)."""
    return len(_encoder(params)["encoder"]["layer"])
