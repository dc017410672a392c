"""Quantization-aware fine-tuning (Q8BERT): fake-quantized weights and activations, STE gradients.

  python -m bertjax.main --config=configs/quant_qat.py:task=mrpc,wbits=8,abits=8 \
      --workdir=runs/mrpc-w8a8

Arguments: those of `finetune.py` plus `wbits` (weights: symmetric, per output
channel), `abits` (activations: asymmetric, per tensor; 0 = off) and `ranges`:
"ema" (default, Q8BERT: each activation site's range is an exponential moving
average of its per-batch min/max, `config.quant.ema_decay`, used in evaluation)
or "dynamic" (each tensor's own min/max at run time). Setting
`config.quant.calibration` (minmax, percentile, mse) with
`config.quant.calibration_batches` calibrates the ranges before training (see
`quant_ptq.py`). The exported model holds the dequantized weights;
`quantized_bytes` in results.json is the size at `wbits`.
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import finetune


def quant_block(args: dict) -> ml_collections.ConfigDict:
    """`config.quant` for parsed `wbits`, `abits` (and `ranges`, default "ema")."""
    block = ml_collections.ConfigDict()
    block.weight_bits = args["wbits"]
    block.weight_symmetric = True
    block.weight_per_channel = True
    block.activation_bits = args["abits"]
    block.activation_symmetric = False
    block.activation_ranges = args.get("ranges", "ema")  # "ema" (Q8BERT) or "dynamic"
    block.ema_decay = 0.9999  # nlp-architect's Q8BERT default
    block.calibration = ""  # "minmax", "percentile", "mse"; "" = none
    block.calibration_batches = 0  # training batches fed forward-only to calibrate
    block.calibration_percentile = 99.99  # for calibration "percentile"
    return block


ARGS = dict(**finetune.BASE_ARGS, wbits=8, abits=8, ranges="ema")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **ARGS)
    config = finetune.build(args)
    config.quant = quant_block(args)
    return config
