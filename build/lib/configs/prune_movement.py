"""Fine-tuning with movement pruning (Sanh et al. 2020) of the encoder's Dense kernels.

  python -m bertjax.main --config=configs/prune_movement.py:task=mrpc,sparsity=0.9 \
      --workdir=runs/mrpc-mov90

Arguments: those of `prune_magnitude.py` plus `movement` (hard: top-k of the
scores on the cubic schedule; soft: scores above `threshold` with the
authors' regularizer `l1` * mean(sigmoid(scores)), default 1.0) and `scores`
(adam, the default: scores trained by Adam at lr 1e-2 as in the authors' code;
sum: plain SGD, S -= lr * (dL/dW') * W, the paper's formula). Scores are
method-owned params; pruned weights get no gradient (methods/pruning/movement.py).
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import prune_magnitude

ARGS = dict(**prune_magnitude.ARGS, movement="hard", scores="adam")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **ARGS)
    config = prune_magnitude.build(args)
    config.prune.kind = "movement"
    config.prune.movement = args["movement"]
    config.prune.score_optimizer = args["scores"]
    if args["scores"] == "adam":
        config.prune.score_lr = 1e-2
    if args["movement"] == "soft":
        config.prune.l1 = 1.0
    return config
