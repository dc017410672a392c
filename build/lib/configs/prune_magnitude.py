"""Fine-tuning with unstructured magnitude pruning of the encoder's Dense kernels.

  python -m bertjax.main --config=configs/prune_magnitude.py:task=mrpc,sparsity=0.7 \
      --workdir=runs/mrpc-mag70

Arguments: those of `finetune.py` plus `sparsity`, `scope` (layer|global) and
`gradual` (True: cubic schedule over the first 70 % of training; False:
one-shot at step 0, then fine-tuning with the mask fixed).
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import finetune

ARGS = dict(**finetune.BASE_ARGS, sparsity=0.5, scope="layer", gradual=True)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return build(parse_arg(arg, **ARGS))


def build(args: dict) -> ml_collections.ConfigDict:
    """The magnitude-pruning config for parsed `args`."""
    config = finetune.build(args)
    config.prune = ml_collections.ConfigDict()
    config.prune.kind = "magnitude"
    config.prune.sparsity = args["sparsity"]
    config.prune.scope = args["scope"]
    config.prune.select = (r"bert/encoder/layer/\d+/.*/kernel",)
    config.prune.initial_sparsity = 0.0
    config.prune.start_fraction = 0.0
    config.prune.end_fraction = 0.7 if args["gradual"] else 0.0
    config.prune.every_steps = 10 if not args["smoke"] else 1
    # Movement-only fields (see configs/prune_movement.py).
    config.prune.movement = "hard"
    config.prune.threshold = 0.0
    config.prune.l1 = 0.0
    config.prune.score_lr = 1.0
    config.prune.score_optimizer = "sum"
    return config
