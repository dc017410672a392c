"""Quantization-aware fine-tuning: fake-quantized weights and activations, STE gradients.

  python -m bertjax.main --config=configs/quant_qat.py:task=mrpc,wbits=8,abits=8 \
      --workdir=runs/mrpc-w8a8

Arguments: those of `finetune.py` plus `wbits` (weights: symmetric, per output
channel) and `abits` (activations: asymmetric, per tensor, dynamic ranges; 0 = off).
Activation ranges are each tensor's own min/max at run time, not Q8BERT's EMA ranges.
The exported model holds the dequantized weights; `quantized_bytes` in results.json
is the size at `wbits`.
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import finetune


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **finetune.BASE_ARGS, wbits=8, abits=8)
    config = finetune.build(args)
    config.method = f"quant_qat_w{args['wbits']}a{args['abits']}"
    config.quant = ml_collections.ConfigDict()
    config.quant.weight_bits = args["wbits"]
    config.quant.weight_symmetric = True
    config.quant.weight_per_channel = True
    config.quant.activation_bits = args["abits"]
    config.quant.activation_symmetric = False
    return config
