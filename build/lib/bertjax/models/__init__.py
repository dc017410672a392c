"""Flax BERT models: architecture, heads, named sizes and HF checkpoint I/O."""

from bertjax.models.bert import COLLECTABLE, BertEncoder
from bertjax.models.checkpoints import build, load_pretrained, resolve, save_pretrained
from bertjax.models.config import BertConfig
from bertjax.models.heads import HEADS, BertModel
from bertjax.models.variants import SIZES, variant_config

__all__ = [
    "COLLECTABLE",
    "HEADS",
    "SIZES",
    "BertConfig",
    "BertEncoder",
    "BertModel",
    "build",
    "load_pretrained",
    "resolve",
    "save_pretrained",
    "variant_config",
]
