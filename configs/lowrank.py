"""Low-rank factorization (truncated SVD) of the encoder's Dense kernels, then fine-tuning.

  python -m bertjax.main --config=configs/lowrank.py:task=mrpc,rank=96,\
model=runs/teacher/mrpc/export --workdir=runs/mrpc-rank96

Arguments: those of `finetune.py` plus one of `rank` (the same rank for every kernel;
the default, 128), `energy` (per kernel, the smallest rank keeping that share of the
squared singular values, e.g. 0.9) or `ratio` (per kernel, the largest rank whose factors
hold at most that share of its values); setting `energy` or `ratio` turns `rank` off.
`multiple` (default 16) rounds those ranks to a multiple of it, down for `ratio` and up
for `energy`, so that int8 factors run on the VNNI kernel; `multiple=1`: exact ranks.
Each kernel W [in, out] becomes `{u [in, r], v [r, out]}`, W ≈ (U√Σ)(√ΣVᵀ), run as two
matmuls (fewer FLOPs only where r < in·out / (in + out): 192 for 384x384, 307 for
384x1536). `export/` holds the factors (bertjax layout, `bertjax_lowrank` in
config.json, loaded back factorized); `export_fp32/` the re-multiplied kernels that
transformers loads.
"""

import ml_collections

from bertjax.config_args import parse_arg
from configs import finetune

ARGS = dict(**finetune.BASE_ARGS, rank=128, energy=0.0, ratio=0.0, multiple=16)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return build(parse_arg(arg, **ARGS))


def build(args: dict) -> ml_collections.ConfigDict:
    """The low-rank config for parsed `args`."""
    config = finetune.build(args)
    config.lowrank = ml_collections.ConfigDict()
    chosen_otherwise = args["energy"] or args["ratio"]
    config.lowrank.rank = 0 if chosen_otherwise else args["rank"]
    config.lowrank.energy = args["energy"]
    config.lowrank.ratio = args["ratio"]
    config.lowrank.multiple = args["multiple"]
    config.lowrank.select = (r"bert/encoder/layer/\d+/.*/kernel",)
    return config
