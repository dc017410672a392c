"""BitFit: fine-tune only the biases and the task head (Ben Zaken et al. 2022).

  python -m bertjax.main --config=configs/bitfit.py:task=rte --workdir=runs/rte-bitfit

BitFit needs a larger learning rate than full fine-tuning (the paper used 1e-4
to 1e-3); the default here is 1e-3.
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import finetune

ARGS = finetune.BASE_ARGS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **ARGS)
    config = finetune.build(args)
    config.train.learning_rate = 1e-3
    config.bitfit = ml_collections.ConfigDict()
    config.bitfit.trainable = (r".*/bias", r"classifier/.*")
    return config
