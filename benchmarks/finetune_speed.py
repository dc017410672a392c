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
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_baseline  # noqa: E402

from bertjax import paths  # noqa: E402
from bertjax.models.interventions import COMPUTE  # noqa: E402
from bertjax.train.loop import train_and_evaluate  # noqa: E402
from configs import finetune  # noqa: E402


def run_bertjax(
    task: str, num_epochs: float, train_limit: int, workdir: str, compute: str = "fp32"
) -> dict:
    config = finetune.get_config(f"model=minilm-l6-h384,task={task}")
    config.precision.compute = compute
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--num-epochs", type=int, default=1)
    parser.add_argument("--train-limit", type=int, default=0)
    parser.add_argument("--compute", nargs="+", default=["fp32"], choices=list(COMPUTE))
    args = parser.parse_args()
    rows = {}
    for compute in args.compute:
        with tempfile.TemporaryDirectory() as workdir:
            rows[f"bertjax {compute}"] = run_bertjax(
                args.task, args.num_epochs, args.train_limit, workdir, compute
            )
    theirs = rows["pytorch fp32"] = run_pytorch(args.task, args.num_epochs, args.train_limit)
    print(
        f"fine-tune {args.task}, {args.num_epochs:g} epoch(s), train_limit "
        f"{args.train_limit or 'all'}"
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
