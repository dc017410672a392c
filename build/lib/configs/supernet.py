"""AutoTinyBERT SuperPLM: a weight-sharing supernet, general-distilled over sampled sub-models.

  python -m bertjax.main --config=configs/supernet.py:steps=500,archs=4 \
      --workdir=runs/supernet

Yin et al. 2021, KD mode, scaled to the teacher: every sub-model is a first-k slice
(layers 1-6, hidden 128-384, heads 1-12 of 32 dims, FFN 128-1536, one shape for all
layers). Each step samples `archs` architectures, runs them as width and depth masks
in one compiled full-size graph, and accumulates their gradients into one update; the
loss is the last layer's attention scores plus its hidden state through a learned
projection (`methods/distill/general.py`). The supernet starts from the teacher
(`init=teacher`; the paper trains from scratch: `init=random`). Then
`python -m bertjax.search` predicts latency, searches and extracts the winner.

Arguments: those of `general_distill.py` (no `student`, `map`) plus `archs` and `init`.
"""

import ml_collections

from bertjax.config_args import parse_arg
from bertjax.search.space import Space
from configs import general_distill

ARGS = {
    **{k: v for k, v in general_distill.ARGS.items() if k not in ("student", "map")},
    "archs": 4,
    "init": "teacher",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **ARGS)
    config = general_distill.build({**args, "student": "supernet", "map": "last"})
    space = Space()
    config.supernet = ml_collections.ConfigDict()
    config.supernet.archs_per_step = args["archs"]
    config.supernet.init = args["init"]  # "teacher" or "random"
    config.supernet.layers = space.layers
    config.supernet.hidden = space.hidden
    config.supernet.heads = space.heads
    config.supernet.ffn = space.ffn
    config.train.learning_rate = 1e-4 if args["init"] == "teacher" else 5e-4
    if args["smoke"]:
        config.supernet.archs_per_step = 2
    return config
