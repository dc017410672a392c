"""LadaBERT (Mao et al. 2020): SVD + iterative magnitude pruning of the factors, with KD.

  python -m bertjax.main --config=configs/ladabert.py:task=mrpc,target_ratio=0.5,\
teacher=runs/teacher/mrpc/export --workdir=runs/mrpc-ladabert50

The student starts as the fine-tuned teacher itself (`teacher`, HF layout; `model` picks
another start). Its encoder Dense kernels are factorized by truncated SVD to
`factor_ratio` of their values (0: sqrt(target_ratio)), then the factors are
magnitude-pruned in `rounds` rounds (the first at the start, the last at 70 % of
training) until exactly `target_ratio` of the dense kernels' values are left nonzero,
all the while distilling the teacher's logits (`temperature`, `alpha` as in
`distill_kd.py`; the teacher's logits are cached once). See methods/lowrank/ladabert.py.
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import distill_kd

ARGS = dict(
    teacher="",
    model="",
    task="rte",
    smoke=False,
    target_ratio=0.5,
    factor_ratio=0.0,
    rounds=4,
    temperature=2.0,
    alpha=0.5,
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **ARGS)
    config = distill_kd.student_config({**args, "student": args["model"] or args["teacher"]})
    config.ladabert = ml_collections.ConfigDict()
    config.ladabert.target_ratio = args["target_ratio"]
    config.ladabert.factor_ratio = args["factor_ratio"]
    config.ladabert.rounds = args["rounds"]
    config.ladabert.end_fraction = 0.7
    config.ladabert.select = (r"bert/encoder/layer/\d+/.*/kernel",)
    config.distill = ml_collections.ConfigDict()
    config.distill.kind = "soft_ce"
    config.distill.temperature = args["temperature"]
    config.distill.alpha = args["alpha"]
    config.distill.cache_teacher = True
    return config
