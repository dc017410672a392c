"""Task heads on top of the encoder, named as in Hugging Face's task models.

`BertModel(config, head=...)` holds the encoder under `bert/` and the head
under `classifier/` (classification, regression) or `cls/predictions/`
(masked LM), so params map one to one onto `BertForSequenceClassification`
and `BertForMaskedLM` state dicts.
"""

from collections.abc import Sequence

import flax.linen as nn

from bertjax.models.bert import (
    _ACTIVATIONS,
    BertEncoder,
    BertModule,
    _init,
    _layer_norm,
    dense,
)
from bertjax.models.dropout import Dropout
from bertjax.models.interventions import NONE, Interventions

HEADS = (None, "classification", "regression", "mlm")


class BertModel(BertModule):
    """BERT encoder plus an optional head; returns `(outputs, intermediates)`.

    `outputs["logits"]`: [B, num_labels] for classification, [B, 1] for
    regression, [B, T, vocab] for MLM. `interventions` reach the encoder and the head.
    """

    head: str | None = None
    num_labels: int = 2

    @property
    def num_labels_out(self) -> int:
        return 1 if self.head == "regression" else self.num_labels

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
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; known: {HEADS}")
        if self.head in ("classification", "regression") and not self.config.add_pooler:
            raise ValueError("sequence heads read the pooler output: set config.add_pooler")
        interventions = NONE if interventions is None else interventions
        kw = self.kwargs()
        encoder = BertEncoder(**kw, name="bert")
        outputs, inter = encoder(
            input_ids,
            attention_mask,
            token_type_ids,
            deterministic=deterministic,
            collect=collect,
            interventions=interventions,
        )
        if self.head in ("classification", "regression"):
            pooled = Dropout(self.config.hidden_dropout_prob)(
                outputs["pooler_output"], deterministic=deterministic
            )
            outputs["logits"] = dense(self, self.num_labels_out, "classifier")(
                pooled, interventions
            )
        elif self.head == "mlm":
            table = encoder.variables["params"]["embeddings"]["word_embeddings"]["embedding"]
            outputs["logits"] = _MlmScope(**kw, name="cls")(outputs["last_hidden_state"], table)
        return outputs, inter


class _MlmScope(BertModule):
    """`cls/predictions/{transform/{dense,LayerNorm}, bias}`."""

    @nn.compact
    def __call__(self, hidden, word_embeddings):
        return _Predictions(**self.kwargs(), name="predictions")(hidden, word_embeddings)


class _Predictions(BertModule):
    @nn.compact
    def __call__(self, hidden, word_embeddings):
        cfg = self.config
        x = _Transform(**self.kwargs(), name="transform")(hidden)
        bias = self.param("bias", nn.initializers.zeros, (cfg.vocab_size,), self.param_dtype)
        return x @ word_embeddings.T.astype(x.dtype) + bias


class _Transform(BertModule):
    @nn.compact
    def __call__(self, hidden):
        cfg = self.config
        x = nn.Dense(
            cfg.hidden_size,
            kernel_init=_init(cfg),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="dense",
        )(hidden)
        return _layer_norm(self)(_ACTIVATIONS[cfg.hidden_act](x))
