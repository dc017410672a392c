"""AutoTinyBERT (Yin et al. 2021): search space, latency predictor, evolutionary search.

`python -m bertjax.search {latency,search,extract}` (see `__main__.py`); the supernet
itself trains with `configs/supernet.py` (`bertjax.pretrain.general`).
"""
