"""Layer dropping ("Poor Man's BERT", Sajjad et al.) followed by fine-tuning.

  python -m bertjax.main --config=configs/layer_drop.py:task=mrpc,drop=2,strategy=top \
      --workdir=runs/mrpc-drop2-top

Arguments: those of `finetune.py` plus `drop` (how many layers) and `strategy`
(top, bottom, even, odd, symmetric; contribution: the layers whose output is most
similar to their input, averaged over `config.layer_drop.calibration_batches`
training batches of the unpruned model before training, reported as
`layers_dropped`; or explicit with `config.layer_drop.layers`).
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import finetune

ARGS = dict(**finetune.BASE_ARGS, drop=2, strategy="top")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **ARGS)
    config = finetune.build(args)
    config.layer_drop = ml_collections.ConfigDict()
    config.layer_drop.drop = args["drop"]
    config.layer_drop.strategy = args["strategy"]
    config.layer_drop.layers = ()
    config.layer_drop.calibration_batches = 8  # for strategy "contribution"
    return config
