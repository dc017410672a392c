"""BERT-of-Theseus: progressive module replacing of a fine-tuned predecessor.

  python -m bertjax.main --config=configs/distill_theseus.py:task=mrpc,\
teacher=runs/teacher/mrpc/export,successors=3 --workdir=runs/mrpc-theseus-l3

Arguments: `teacher` (the fine-tuned predecessor; the run starts from it),
`successors` (layers of the compressed model; must divide the teacher's),
`schedule` (constant: p = `rate`; linear: p grows from `rate` to 1 over the
first `ramp` fraction of training, after which only successors run),
`task`, `smoke`. The export is the successor-only model.
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import finetune
from methods.distill.theseus import SUCCESSOR

ARGS = dict(
    teacher="", task="rte", smoke=False, successors=3, schedule="linear", rate=0.5, ramp=0.6
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **ARGS)
    config = finetune.build({**args, "model": args["teacher"] or "minilm-l6-h384"})
    config.teacher = args["teacher"]  # for loyalty only: the predecessor is the model itself
    config.theseus = ml_collections.ConfigDict()
    config.theseus.successors = args["successors"]
    config.theseus.schedule = args["schedule"]
    config.theseus.rate = args["rate"]
    config.theseus.ramp_fraction = args["ramp"]
    config.theseus.init_from = "first"
    config.theseus.trainable = (SUCCESSOR,)
    return config
