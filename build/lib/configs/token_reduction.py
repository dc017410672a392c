"""TR-BERT token reduction (methods/dynamic/token_reduction.py) of a fine-tuned model.

  python -m bertjax.main --config=configs/token_reduction.py:task=mrpc,\
teacher=runs/teacher/mrpc/export,alpha=1.0 --workdir=runs/mrpc-tr-a1

The model starts as the teacher (a fine-tuned model directory). One run trains the
policy nets alone by REINFORCE for the first `policy_fraction` of the steps (the first
half of those imitating gradient importance), then everything jointly with soft
cross-entropy against the teacher (`config.distill`: logit KD, alpha 1) plus the RL
loss. Each input is repeated `samples` (K = 8) times, so a batch of 8 is 64 rows.

Arguments: `teacher`, `task`, `alpha` (the length penalty: reward = -loss - alpha *
kept share), `smoke`, `train_limit` (first N training examples; 0: all), `epochs`.
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import finetune

ARGS = dict(teacher="", task="mrpc", smoke=False, alpha=1.0, train_limit=0, epochs=1.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **ARGS)
    if not args["teacher"]:
        raise ValueError("configs/token_reduction.py needs teacher=DIR (a fine-tuned model)")
    config = finetune.build({**args, "model": args["teacher"]})
    config.teacher = args["teacher"]
    config.train.learning_rate = 3e-5  # the authors'
    config.train.batch_size = 8  # x K copies = 64 rows
    config.train.num_epochs = args["epochs"]
    if args["train_limit"]:
        config.data.train_limit = args["train_limit"]

    config.distill = ml_collections.ConfigDict()
    config.distill.kind = "soft_ce"
    config.distill.temperature = 1.0
    config.distill.alpha = 1.0  # joint phase: soft cross-entropy against the teacher only
    # Not cached: the logit cache refuses methods with intermediates (`tokens`, read from
    # the student only), so the teacher runs on the K copies in each step.
    config.distill.cache_teacher = False

    block = config.token_reduction = ml_collections.ConfigDict()
    block.alpha = args["alpha"]
    block.samples = 8  # K copies of each input; the baseline is their mean reward
    block.policy_fraction = 0.5  # steps training the policy alone, then everything
    block.guide_fraction = 0.5  # of the policy steps: imitation of gradient importance
    block.policy_lr = 1e-3  # Adam for the policy nets (the authors: 3e-5, far more steps)
    block.width = 32
    block.threshold = 0.5  # inference: keep where probability >= threshold
    block.temperature = config.distill.temperature
    block.layers = ()  # empty: (1, L // 2)
    block.guide_layer = -2  # dL/dh of layer L - 2 (the authors' for 6 layers: 4)
    return config
