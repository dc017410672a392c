"""Logit distillation (Hinton; DistilBERT/PKD) from a fine-tuned teacher into a student.

  python -m bertjax.main --config=configs/distill_kd.py:task=mrpc,student=minilm-l3-h384 \
      --config.teacher=runs/teacher/mrpc/export --workdir=runs/mrpc-kd-l3

Arguments: `student` (any model name or size), `task`, `smoke`, `temperature`,
`alpha` (weight of the KD term; the hard-label loss gets 1 - alpha) and `kind`
(soft_ce or mse on logits; regression tasks always use MSE).
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import finetune


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(
        arg,
        student="minilm-l3-h384",
        task="rte",
        smoke=False,
        temperature=2.0,
        alpha=0.5,
        kind="soft_ce",
    )
    config = finetune.build({"model": args["student"], **args})
    config.method = f"distill_kd_{args['kind']}"
    config.distill = ml_collections.ConfigDict()
    config.distill.kind = args["kind"]
    config.distill.temperature = args["temperature"]
    config.distill.alpha = args["alpha"]
    return config
