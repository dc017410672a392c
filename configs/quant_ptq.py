"""Post-training quantization: no training; weights rounded, activation ranges calibrated.

  python -m bertjax.main --config=configs/quant_ptq.py:model=runs/mrpc/export,task=mrpc \
      --workdir=runs/mrpc-ptq-w8a8

Arguments: those of `finetune.py` (`model` should be a fine-tuned checkpoint)
plus `wbits` (weights: symmetric, per output channel), `abits` (activations:
asymmetric, per tensor; 0 = off), `calibration` (minmax, percentile, mse; see
`methods/quant/calibration.py`) and `batches` (training batches fed
forward-only to calibrate). `train.num_epochs` is 0: the run calibrates,
evaluates the quantized model with the calibrated (frozen) ranges, and exports
the dequantized weights; results.json reports `calibration` and
`calibration_batches`.
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import finetune, quant_qat


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **finetune.BASE_ARGS, wbits=8, abits=8, calibration="minmax", batches=16)
    config = finetune.build(args)
    config.method = f"quant_ptq_w{args['wbits']}a{args['abits']}_{args['calibration']}"
    config.train.num_epochs = 0.0
    config.quant = quant_qat.quant_block({**args, "ranges": "dynamic"})
    config.quant.calibration = args["calibration"]
    config.quant.calibration_batches = args["batches"]
    return config
