"""Quantization first: another operator's run with W8A8 fake-quant (QAT) from its first step.

  python -m bertjax.main --config=configs/qat_first.py:then=prune_structured,\
model=runs/teacher/mrpc/export,task=mrpc,heads=0.5,ffn=0.5 --workdir=runs/mrpc-qat-prune

Arguments: `then`, the operator's config (`prune_structured`, `layer_drop`, `lowrank`,
`distill_kd`, ...); every other key goes to that config, as in its own `:arg`. The run is
that config plus `config.quant` of `quant_qat.py` with dynamic ranges (8-bit weights per
output channel, 8-bit activations at each tensor's own min/max, straight-through
gradients): the operator trains and finalizes a model whose forward is quantized from
step 0. An int8-stored export cannot be trained (its weights are integers), so this is
what "int8, then the operator" means. `export/` holds the dequantized weights, on the
int8 grid; `quant_ptq.py:int8=true` on it stores them in int8.
"""

import importlib

import ml_collections

from configs import finetune, quant_qat

ARGS = dict(then="prune_structured", **finetune.BASE_ARGS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    items = [item for item in (arg or "").split(",") if item]
    then = [item.partition("=")[2].strip() for item in items if item.startswith("then=")]
    rest = ",".join(item for item in items if not item.startswith("then="))
    name = then[-1] if then else ARGS["then"]
    if name in ("qat_first", "quant_qat", "quant_ptq") or not name.isidentifier():
        raise ValueError(f"config argument then={name}: must name a non-quantization config")
    config = importlib.import_module(f"configs.{name}").get_config(rest)
    if config.get("quant") is not None:
        raise ValueError(f"config argument then={name}: that config already quantizes")
    config.quant = quant_qat.quant_block({"wbits": 8, "abits": 8, "ranges": "dynamic"})
    return config
