"""BERT-EMD: many-to-many layer mapping by Earth Mover's Distance, then logits.

  python -m bertjax.main --config=configs/distill_emd.py:task=mrpc,student=teacher:3,\
teacher=runs/teacher/mrpc/export --workdir=runs/mrpc-emd-l3

Arguments: those of `distill_tinybert.py` except `map` (EMD finds the mapping);
`--config.distill.weight_temperature` and `--config.distill.update_weights`
control the layer-weight ("cost attention") update.
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import distill_kd, distill_tinybert

ARGS = {**distill_kd.STUDENT_ARGS, "temperature": 1.0, **distill_tinybert.TRANSFORMER_ARGS}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **ARGS)
    config = distill_kd.student_config(args)
    config.distill = distill_tinybert.transformer_block(args, "emd")
    return config
