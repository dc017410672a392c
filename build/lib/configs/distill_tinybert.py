"""TinyBERT transformer distillation: embedding, attention and hidden-state losses, then logits.

  python -m bertjax.main --config=configs/distill_tinybert.py:task=mrpc,student=teacher:3,\
teacher=runs/teacher/mrpc/export,map=uniform --workdir=runs/mrpc-tinybert-l3

Arguments: those of `distill_kd.py` (`teacher`, `student`, `task`, `smoke`,
`temperature`, default 1 as in TinyBERT) plus `map` (uniform, top, bottom, last;
`--config.distill.explicit_map=(2,4,6)` with `map=explicit`), `stage`
(intermediate, prediction, or both: intermediate losses for the first
`split` fraction of training, prediction-layer KD after). A student narrower
than the teacher gets a learned projection (dropped at export).
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import distill_kd

TRANSFORMER_ARGS = dict(stage="both", split=0.5)
ARGS = {**distill_kd.STUDENT_ARGS, "temperature": 1.0, **TRANSFORMER_ARGS, "map": "uniform"}


def transformer_block(args: dict, kind: str) -> ml_collections.ConfigDict:
    """The `config.distill` block shared by TinyBERT and BERT-EMD."""
    block = ml_collections.ConfigDict()
    block.kind = kind
    block.temperature = args["temperature"]
    block.alpha = 1.0  # unused: transformer distillation has no hard-label loss
    block.stage = args["stage"]
    block.split_fraction = args["split"]
    block.layer_map = "uniform"
    block.explicit_map = ()
    block.weight_temperature = 0.0  # EMD layer weights: 0 = plain normalisation, > 0 = softmax
    block.update_weights = True
    return block


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **ARGS)
    config = distill_kd.student_config(args)
    config.distill = transformer_block(args, "tinybert")
    config.distill.layer_map = args["map"]
    return config
