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

`int8=True`: the weights are stored in int8 (`methods/quant/storage.py`: Dense
kernels per output channel, embedding tables per row) and the Dense matmuls really
run in int8 (int8 x int8 -> int32) at evaluation, instead of fake-quant; `wbits` and
`abits` must be 8. `export/` is the int8 artifact (`load_pretrained` runs it in
int8; results.json's `bytes` is its size), `export_fp32/` its dequantized fp32 copy
(transformers loads that). `scales`: "dynamic" (default: each token's activation
scale at run time, no calibration) or "static" (one scale per Dense input,
`calibration` over `batches` training batches, stored in the artifact).
`attention8=True` also runs q.k and probs.v in int8 at evaluation (dynamic; the
artifact, loaded plainly, runs them in float).
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import finetune, quant_qat

ARGS = dict(
    **finetune.BASE_ARGS,
    wbits=8,
    abits=8,
    calibration="minmax",
    batches=16,
    int8=False,
    scales="dynamic",
    attention8=False,
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, **ARGS)
    config = finetune.build(args)
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
        if args["scales"] not in ("dynamic", "static"):
            raise ValueError(f"scales must be 'dynamic' or 'static', got {args['scales']!r}")
        config.quant.int8_activations = args["scales"]
        config.quant.int8_attention = bool(args["attention8"])
        if args["scales"] == "dynamic":
            config.quant.calibration, config.quant.calibration_batches = "", 0
    return config
