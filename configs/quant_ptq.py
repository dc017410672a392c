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

`int8=True`: the matmuls really run in int8 at evaluation (`methods/quant/int8.py`:
int8 x int8 -> int32 with dynamic per-token / per-channel scales, no calibration)
instead of fake-quant; `wbits` and `abits` must be 8.
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import finetune, quant_qat


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(
        arg, **finetune.BASE_ARGS, wbits=8, abits=8, calibration="minmax", batches=16, int8=False
    )
    config = finetune.build(args)
    config.method = f"quant_ptq_w{args['wbits']}a{args['abits']}_{args['calibration']}"
    config.train.num_epochs = 0.0
    config.quant = quant_qat.quant_block({**args, "ranges": "dynamic"})
    config.quant.calibration = args["calibration"]
    config.quant.calibration_batches = args["batches"]
    config.quant.int8 = bool(args["int8"])
    if config.quant.int8:
        if (args["wbits"], args["abits"]) != (8, 8):
            raise ValueError(
                f"int8=True runs W8A8; got wbits={args['wbits']}, abits={args['abits']}"
            )
        config.method = "quant_ptq_int8_dynamic"
        config.quant.calibration, config.quant.calibration_batches = "", 0
    return config
