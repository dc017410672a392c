"""Fine-tuning with attention-head and FFN-neuron pruning, exported physically smaller.

  python -m bertjax.main --config=configs/prune_structured.py:task=mrpc,heads=0.5,ffn=0.5 \
      --workdir=runs/mrpc-h50-f50

Arguments: those of `finetune.py` plus `heads` and `ffn` (fractions removed),
`importance` (gradient: |dL/dmask| accumulated over the first 10 % of training,
Michel et al. 2019; weight_norm: at step 0) and `scope` (layer|global). With
`teacher=DIR` (a fine-tuned model) the pruned model also learns the teacher's logits while
it is pruned (logit KD, `alpha` and `temperature` as in distill_kd.py).
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import distill_kd, finetune

ARGS = dict(**finetune.BASE_ARGS, heads=0.5, ffn=0.5, importance="gradient", scope="layer",
            teacher="", alpha=distill_kd.ARGS["alpha"],
            temperature=distill_kd.ARGS["temperature"])  # fmt: skip


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **ARGS)
    config = finetune.build(args)
    config.structured = ml_collections.ConfigDict()
    config.structured.head_sparsity = args["heads"]
    config.structured.ffn_sparsity = args["ffn"]
    config.structured.importance = args["importance"]
    config.structured.scope = args["scope"]
    config.structured.prune_fraction = 0.1
    if args["teacher"]:
        config.teacher = args["teacher"]
        config.distill = distill_kd.kd_block(args)
    return config
