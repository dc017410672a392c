"""End-to-end fine-tuning: bertjax vs a plain PyTorch loop, same task, same run.

Both sides fine-tune minilm-l6-h384 with AdamW 1e-4, batch 32, warmup 10 %,
seq 128, weight decay 0.01, clip 1.0, then evaluate on dev. PyTorch pads each
shuffled batch to its longest row (dynamic padding); bertjax uses its own
pipeline (length bucketing) and counts XLA compilation in its time. Reports
the training-loop seconds, the whole call's wall seconds (load, tokenize,
train, evaluate), and the dev metrics of each. `--compute fp32 bf16` runs bertjax once
per arithmetic (`config.precision.compute`; bf16 = bfloat16 matmuls forward and
backward, float32 master weights), PyTorch once (fp32).

  python benchmarks/finetune_speed.py --task mrpc --num-epochs 1 --compute fp32 bf16

XLA compilation is a large share of a short fine-tune, so each bertjax row is one of
`--variants`: `serial` compiles each padded length when the loop first meets it, with an
empty persistent cache (bertjax before the compile levers); `ahead` also compiles the
other lengths on a background thread (`config.train.compile_ahead`, the default), empty
cache (a first run); `warm` is `ahead` with the persistent cache filled by a previous run
of the same shapes (`bertjax/compilation.py`: a rerun, another seed, a grid's next cell).
`--bucket-multiples` pads batches to multiples of each value (`config.data.bucket_multiple`;
finer pads less, compiles more lengths). The bertjax rows are every
compute x variant x multiple, or `--rows compute:variant:multiple ...`.
`--rounds N` repeats every row N times in turn and keeps each row's fastest.

  python benchmarks/finetune_speed.py --task mrpc --rows bf16:serial:32 bf16:ahead:32 \
      bf16:warm:32 bf16:warm:8
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_baseline  # noqa: E402

from bertjax import paths  # noqa: E402
from bertjax.models.interventions import COMPUTE  # noqa: E402
from bertjax.train.loop import train_and_evaluate  # noqa: E402
from configs import finetune  # noqa: E402

VARIANTS = ("serial", "ahead", "warm")


def use_cache(directory: Path) -> None:
    """Points JAX's persistent compilation cache at `directory` (train_and_evaluate keeps a
    cache that is already set)."""
    jax.config.update("jax_compilation_cache_dir", str(directory))
    compilation_cache.reset_cache()


def run_bertjax(
    task: str,
    num_epochs: float,
    train_limit: int,
    workdir: str,
    compute: str = "fp32",
    compile_ahead: bool = True,
    bucket_multiple: int = 32,
) -> dict:
    config = finetune.get_config(f"model=minilm-l6-h384,task={task}")
    config.precision.compute = compute
    config.train.compile_ahead = compile_ahead
    config.data.bucket_multiple = bucket_multiple
    config.train.num_epochs = num_epochs
    config.data.train_limit = train_limit
    config.checkpoint.every_steps = 10**9  # one save at the end, like the PyTorch loop's none
    config.export = False
    start = time.perf_counter()
    results = train_and_evaluate(config, workdir)
    return {
        "train_seconds": results["train_seconds"],
        "wall_seconds": time.perf_counter() - start,
        "metrics": results["metrics"],
    }


def run_pytorch(task: str, num_epochs: float, train_limit: int) -> dict:
    start = time.perf_counter()
    results = torch_baseline.finetune(
        task, paths.models_root() / "minilm-l6-h384", num_epochs=num_epochs, train_limit=train_limit
    )
    return {
        "train_seconds": results["train_seconds"],
        "wall_seconds": time.perf_counter() - start,
        "metrics": results["metrics"],
    }


def bertjax_row(args, compute: str, variant: str, multiple: int, warm_cache: Path) -> dict:
    """One bertjax fine-tune as `variant` (see the module doc). `warm_cache` is the cache
    the `warm` rows read: the first `ahead` row fills it (it is empty then, so that row is
    still a first run); without one, an unreported run fills it."""
    empty_warm = not any(warm_cache.iterdir())
    if variant == "warm" and empty_warm:
        use_cache(warm_cache)
        with tempfile.TemporaryDirectory() as workdir:
            run_bertjax(args.task, args.num_epochs, args.train_limit, workdir, compute,
                        bucket_multiple=multiple)  # fmt: skip
    with tempfile.TemporaryDirectory() as workdir, tempfile.TemporaryDirectory() as empty:
        filling = variant == "warm" or (variant == "ahead" and empty_warm)
        use_cache(warm_cache if filling else Path(empty))
        return run_bertjax(args.task, args.num_epochs, args.train_limit, workdir, compute,
                           variant != "serial", multiple)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--num-epochs", type=int, default=1)
    parser.add_argument("--train-limit", type=int, default=0)
    parser.add_argument("--compute", nargs="+", default=["fp32"], choices=list(COMPUTE))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--bucket-multiples", type=int, nargs="+", default=[32])
    parser.add_argument(
        "--rows", nargs="+", help="compute:variant:multiple, instead of the product"
    )
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if args.rows:
        rows_wanted = [(c, v, int(m)) for c, v, m in (r.split(":") for r in args.rows)]
    else:
        rows_wanted = [(c, v, m) for c in args.compute for v in args.variants
                       for m in args.bucket_multiples]  # fmt: skip
    for compute, variant, _ in rows_wanted:
        if compute not in COMPUTE or variant not in VARIANTS:
            parser.error(f"unknown compute {compute!r} or variant {variant!r}")
    rows: dict[str, dict] = {}

    def keep_fastest(name: str, result: dict) -> None:
        if name not in rows or result["train_seconds"] < rows[name]["train_seconds"]:
            rows[name] = result

    with tempfile.TemporaryDirectory() as caches:
        warm: dict[tuple, Path] = {}  # (compute, multiple) -> its warm cache
        for _ in range(args.rounds):
            for compute, variant, multiple in rows_wanted:
                cache = warm.setdefault((compute, multiple), Path(caches) / f"{compute}-{multiple}")
                cache.mkdir(exist_ok=True)
                result = bertjax_row(args, compute, variant, multiple, cache)
                keep_fastest(f"bertjax {compute} {variant}, buckets of {multiple}", result)
            keep_fastest("pytorch fp32", run_pytorch(args.task, args.num_epochs, args.train_limit))
    theirs = rows["pytorch fp32"]
    print(
        f"fine-tune {args.task}, {args.num_epochs:g} epoch(s), train_limit "
        f"{args.train_limit or 'all'}, best of {args.rounds} round(s)"
    )
    print("| framework | train s | wall s | train speed-up | dev metrics |")
    print("|---|---:|---:|---:|---|")
    for name, r in rows.items():
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in r["metrics"].items())
        print(
            f"| {name} | {r['train_seconds']:.1f} | {r['wall_seconds']:.1f} | "
            f"{theirs['train_seconds'] / r['train_seconds']:.2f}x | {metrics} |"
        )


if __name__ == "__main__":
    main()
