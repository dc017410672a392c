"""BERT hyper-parameters, convertible to and from Hugging Face `config.json`."""

import dataclasses
from typing import Any

_HF_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
)


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture of a BERT encoder; field names are Hugging Face's."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # Whether the encoder has a pooler (tanh Dense over [CLS]); some
    # sentence-embedding checkpoints ship without one.
    add_pooler: bool = True

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "BertConfig":
        """Builds a config from a parsed HF `config.json` (extra keys ignored)."""
        if hf.get("model_type", "bert") != "bert":
            raise ValueError(f"not a BERT checkpoint: model_type={hf.get('model_type')!r}")
        if hf.get("pruned_heads"):
            raise ValueError("checkpoints with HF `pruned_heads` are not supported yet")
        return cls(**{k: hf[k] for k in _HF_FIELDS if k in hf})

    def to_hf(self) -> dict[str, Any]:
        """The HF `config.json` fields of this architecture."""
        out = {k: getattr(self, k) for k in _HF_FIELDS}
        out.update(model_type="bert", initializer_range=0.02, position_embedding_type="absolute")
        return out
