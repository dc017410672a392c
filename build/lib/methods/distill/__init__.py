"""Knowledge distillation as methods: logit KD, TinyBERT, BERT-EMD (and Theseus, in
theseus.py). `from_config` builds the `config.distill` block's method."""

from methods.base import Context, Method
from methods.distill.bert_emd import EmdDistillation
from methods.distill.logits import LogitDistillation, soft_cross_entropy
from methods.distill.tinybert import TinyBertDistillation

KINDS = {
    "soft_ce": LogitDistillation,
    "mse": LogitDistillation,
    "tinybert": TinyBertDistillation,
    "emd": EmdDistillation,
}


def from_config(block, context: Context) -> Method:
    """The `config.distill` block's method (`block.kind`: soft_ce, mse, tinybert, emd)."""
    if block.kind not in KINDS:
        raise ValueError(f"unknown distillation kind {block.kind!r}; known: {sorted(KINDS)}")
    return KINDS[block.kind].from_config(block, context)


__all__ = [
    "EmdDistillation",
    "LogitDistillation",
    "TinyBertDistillation",
    "from_config",
    "soft_cross_entropy",
]
