"""Train-step time of two source trees side by side (before/after a refactor).

Each tree runs in its own worker process (`PYTHONPATH=TREE`), and the workers
take turns: round r times `--steps` calls of each tree's jitted train step
(in rotated order), so machine noise hits both. Steps: plain fine-tuning, and
the step of each `--methods` config (built the way each tree's loop builds
it), on MiniLM-L6 with a classification head and a fixed random batch [B, T].
Reports the best step time per tree and the ratio.

  python benchmarks/ab_train_step.py --before /work/baseline --after . \
      --methods finetune quant_qat prune_magnitude --batch-size 32 --seq-len 128
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORKER = r"""
import json, sys, time
import jax, numpy as np
from bertjax.data import tasks
from bertjax.train import loop, steps
import importlib

name, batch_size, seq_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
module = importlib.import_module(f"configs.{name}")
config = module.get_config("model=minilm-l6-h384,task=mrpc")
config.data.train_limit = config.data.eval_limit = 64
if hasattr(loop, "create_train_state"):  # the new loop
    run = loop.create_train_state(config)
    model, method, state = run.model, run.method, run.state
else:  # the loop before issue 13
    from bertjax.train.method_config import build_method
    from bertjax.train.optimizer import make_optimizer
    from bertjax.train.state import TrainState
    task = tasks.get_task("mrpc")
    model, params, _, _ = loop.build_model(config, task)
    method = build_method(config, 10_000, model.config)
    params = method.init_params(params, jax.random.fold_in(jax.random.key(0), 2))
    tx = method.wrap_optimizer(make_optimizer(config.train, 10_000), params)
    method_state = method.init(params, jax.random.fold_in(jax.random.key(0), 1))
    state = TrainState.create(params, tx, 0, method_state=method_state)
rng = np.random.default_rng(0)
ids = rng.integers(1000, model.config.vocab_size, (batch_size, seq_len)).astype(np.int32)
batch = dict(input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids),
             labels=rng.integers(0, 2, batch_size).astype(np.int32),
             weights=np.ones(batch_size, np.float32))
step = steps.make_train_step(model, regression=False, method=method, donate=False)
jax.block_until_ready(step(state, batch))  # compile
print("ready", flush=True)
for line in sys.stdin:
    count = int(line)
    best = float("inf")
    for _ in range(count):
        start = time.perf_counter()
        jax.block_until_ready(step(state, batch))
        best = min(best, time.perf_counter() - start)
    print(json.dumps(best), flush=True)
"""


def start_worker(tree: Path, method: str, batch_size: int, seq_len: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve()), "HF_HUB_OFFLINE": "1"}
    env.pop("XLA_FLAGS", None)
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, method, str(batch_size), str(seq_len)],
        cwd=tree,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if worker.stdout.readline().strip() != "ready":
        raise RuntimeError(f"worker for {tree} ({method}) did not start")
    return worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=Path("."))
    parser.add_argument("--methods", nargs="+", default=["finetune"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    rows = []
    for method in args.methods:
        workers = {
            tree: start_worker(path, method, args.batch_size, args.seq_len)
            for tree, path in (("before", args.before), ("after", args.after))
        }
        best = {tree: float("inf") for tree in workers}
        order = list(workers)
        for r in range(args.rounds):
            for tree in order[r % 2 :] + order[: r % 2]:
                workers[tree].stdin.write(f"{args.steps}\n")
                workers[tree].stdin.flush()
                best[tree] = min(best[tree], json.loads(workers[tree].stdout.readline()))
        for worker in workers.values():
            worker.stdin.close()
            worker.wait()
        rows.append({"method": method, **best, "after/before": best["after"] / best["before"]})
    print(
        f"train step, batch {args.batch_size} x {args.seq_len}, best of "
        f"{args.rounds} x {args.steps}; load average at end: {os.getloadavg()}"
    )
    print("| method | before s | after s | after / before |\n|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['method']} | {row['before']:.3f} | {row['after']:.3f} | "
            f"{row['after/before']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "time": time.time()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
