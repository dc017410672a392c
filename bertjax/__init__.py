"""bertjax: functional Flax BERT and pure-function compression methods."""

__version__ = "0.1.0"
