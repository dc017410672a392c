"""Named BERT sizes for random initialisation (Turc et al. 2019's compact BERTs).

`tiny` ... `base` give the architecture only; pretrained weights come from
`load_pretrained`. Sizes use the uncased BERT WordPiece vocabulary unless
`vocab_size` says otherwise.
"""

import dataclasses

from bertjax.models.config import BertConfig

# name: (layers, hidden, heads); FFN is 4 x hidden, as in BERT.
SIZES = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
}


def is_variant(name: str) -> bool:
    return name in SIZES


def variant_config(name: str, **overrides) -> BertConfig:
    """The `BertConfig` of a named size; `overrides` replace any field."""
    if name not in SIZES:
        raise ValueError(f"unknown model size {name!r}; known: {sorted(SIZES)}")
    layers, hidden, heads = SIZES[name]
    config = BertConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
    )
    return dataclasses.replace(config, **overrides)
