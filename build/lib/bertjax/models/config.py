"""BERT hyper-parameters, convertible to and from Hugging Face `config.json`."""

import dataclasses
from collections.abc import Sequence
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
    # Structured compression, per layer: the original indices of removed heads
    # (HF's `pruned_heads`), and FFN widths. Empty means none removed / uniform.
    pruned_heads: tuple[tuple[int, ...], ...] = ()
    intermediate_sizes: tuple[int, ...] = ()
    # Width of one attention head; 0 means hidden_size / num_attention_heads (BERT's rule).
    # Set when the q/k/v width (heads x head size) differs from the hidden width
    # (AutoTinyBERT sub-models): transformers cannot load such a model, bertjax can.
    attention_head_size: int = 0

    def __post_init__(self):
        if not self.attention_head_size and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        for name in ("pruned_heads", "intermediate_sizes"):
            value = getattr(self, name)
            if value and len(value) != self.num_hidden_layers:
                raise ValueError(
                    f"{name} has {len(value)} entries for {self.num_hidden_layers} layers"
                )

    @property
    def head_dim(self) -> int:
        return self.attention_head_size or self.hidden_size // self.num_attention_heads

    def heads_in_layer(self, layer: int) -> int:
        """Attention heads that layer `layer` still has."""
        removed = self.pruned_heads[layer] if self.pruned_heads else ()
        return self.num_attention_heads - len(removed)

    def ffn_size(self, layer: int) -> int:
        """FFN width of layer `layer`."""
        return self.intermediate_sizes[layer] if self.intermediate_sizes else self.intermediate_size

    def with_layers(self, sources: Sequence[int]) -> "BertConfig":
        """The config of a model made of layers `sources` (in order) of this one: per-layer
        head removals and FFN widths follow their layers (layer dropping, Theseus, truncation)."""
        pick = lambda values: tuple(values[i] for i in sources) if values else values  # noqa: E731
        sizes = pick(self.intermediate_sizes)
        return dataclasses.replace(
            self,
            num_hidden_layers=len(sources),
            pruned_heads=pick(self.pruned_heads),
            intermediate_sizes=sizes,
            intermediate_size=max(sizes, default=self.intermediate_size),
        )

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "BertConfig":
        """Builds a config from a parsed HF `config.json` (extra keys ignored)."""
        if hf.get("model_type", "bert") != "bert":
            raise ValueError(f"not a BERT checkpoint: model_type={hf.get('model_type')!r}")
        fields = {k: hf[k] for k in _HF_FIELDS if k in hf}
        layers = fields.get("num_hidden_layers", cls.num_hidden_layers)
        # HF 4.x `pruned_heads` (weights stored pruned) or ours (stored zero-padded).
        pruned = hf.get("bertjax_pruned_heads") or hf.get("pruned_heads")
        if pruned:
            removed = {int(k): tuple(sorted(v)) for k, v in pruned.items()}
            fields["pruned_heads"] = tuple(removed.get(i, ()) for i in range(layers))
        if hf.get("bertjax_attention_head_size"):
            fields["attention_head_size"] = int(hf["bertjax_attention_head_size"])
        if hf.get("bertjax_intermediate_sizes"):
            fields["intermediate_sizes"] = tuple(hf["bertjax_intermediate_sizes"])
        return cls(**fields)

    def to_hf(self) -> dict[str, Any]:
        """The HF `config.json` fields of this architecture.

        Per-layer FFN widths have no HF field: `intermediate_size` becomes the
        widest layer (narrower layers are zero-padded on export, which changes
        no output) and the true widths go to `bertjax_intermediate_sizes`.
        Pruned heads likewise are exported as zero heads (transformers 5.x has no
        head pruning) and listed in `bertjax_pruned_heads`.
        """
        out = {k: getattr(self, k) for k in _HF_FIELDS}
        out.update(model_type="bert", initializer_range=0.02, position_embedding_type="absolute")
        if any(self.pruned_heads):
            out["bertjax_pruned_heads"] = {
                str(i): list(h) for i, h in enumerate(self.pruned_heads) if h
            }
        if self.attention_head_size:
            out["bertjax_attention_head_size"] = self.attention_head_size
        if self.intermediate_sizes:
            out["intermediate_size"] = max(self.intermediate_sizes)
            out["bertjax_intermediate_sizes"] = list(self.intermediate_sizes)
        return out
