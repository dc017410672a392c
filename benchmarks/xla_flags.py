"""XLA:CPU flags A/B on the whole fp32 forward (issue 14 item 1), side by side.

Each flag set runs in its own worker process (`XLA_FLAGS` is read at start-up),
compiles bertjax's jitted eval forward of one checkpoint at every batch size,
and the workers take turns: each round, every flag set times `--repeats` calls
per batch size in rotated order; the best of the rounds' medians is reported,
with the speed-up over the default flags and the max |output difference| from
the default's outputs on the same batch (so a flag that changes the numbers
shows it). A flag set that fails to start is reported, not fatal.

  python benchmarks/xla_flags.py minilm-l6-h384 --batch 1 32 --seq 128 --rounds 4
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FLAG_SETS = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn-custom-call": "--xla_cpu_experimental_onednn_custom_call=true",
    "onednn-fusions": "--xla_cpu_use_onednn=true "
    "--xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce",
    "xnn-fusions": "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
    "ynn-fusions": "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce",
    "xnn-graph-greedy": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "ynn-off": "--xla_cpu_experimental_ynn_fusion_type=",
    "ynn-dot": "--xla_cpu_experimental_ynn_fusion_type=dot",
    "xnnpack-off": "--xla_cpu_use_xnnpack=false",
    "concurrency-scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
    "fast-math": "--xla_cpu_enable_fast_math=true",
    "vector-512": "--xla_cpu_prefer_vector_width=512",
}

WORKER = r"""
import json, statistics, sys, time
import jax, numpy as np
from bertjax import bench
directory, seq, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
batches = [int(b) for b in sys.argv[4].split(",")]
model, params = bench.load_model(directory)
forwards = {b: bench.make_forward(model, params, b, seq) for b in batches}
for b, forward in forwards.items():
    np.save(f"{out_dir}/b{b}.npy", np.asarray(forward()))  # compiles; outputs for checking
print("ready", flush=True)
for line in sys.stdin:
    b, repeats = (int(x) for x in line.split())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(forwards[b]())
        times.append(time.perf_counter() - start)
    print(json.dumps(statistics.median(times)), flush=True)
"""


def start(name: str, flags: str, args, out_dir: Path):
    env = {**os.environ, "XLA_FLAGS": flags, "HF_HUB_OFFLINE": "1"}
    repo = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(repo)
    out_dir.mkdir(parents=True, exist_ok=True)
    batches = ",".join(str(b) for b in args.batch)
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, args.model, str(args.seq), str(out_dir), batches],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if worker.stdout.readline().strip() != "ready":
        error = worker.stderr.read().strip().splitlines()
        return None, (error[-1] if error else "no output")[:200]
    return worker, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="checkpoint directory or $BERTJAX_MODELS name")
    parser.add_argument("--sets", nargs="+", default=list(FLAG_SETS), choices=list(FLAG_SETS))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sets = ["default"] + [s for s in args.sets if s != "default"]
    print(f"load average at start: {os.getloadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="xla_flags_"))
    workers, failed = {}, {}
    for name in sets:
        worker, error = start(name, FLAG_SETS[name], args, tmp / name)
        if worker is None:
            failed[name] = error
        else:
            workers[name] = worker
    if "default" not in workers:
        raise SystemExit(f"the default flags failed to start: {failed.get('default')}")
    best = {name: {b: float("inf") for b in args.batch} for name in workers}
    names = list(workers)
    for r in range(args.rounds):
        for b in args.batch:
            for name in names[r % len(names) :] + names[: r % len(names)]:
                workers[name].stdin.write(f"{b} {args.repeats}\n")
                workers[name].stdin.flush()
                best[name][b] = min(best[name][b], json.loads(workers[name].stdout.readline()))
    for worker in workers.values():
        worker.stdin.close()
        worker.wait()
    rows = []
    for name in names:
        diff = max(
            float(
                np.max(
                    np.abs(
                        np.load(tmp / name / f"b{b}.npy") - np.load(tmp / "default" / f"b{b}.npy")
                    )
                )
            )
            for b in args.batch
        )
        rows.append({"set": name, "flags": FLAG_SETS[name], "ms": best[name], "max_diff": diff})
    print(
        f"{args.model}, seq {args.seq}, best of {args.rounds} rounds of median-of-"
        f"{args.repeats}; load average at end: {os.getloadavg()}"
    )
    header = " | ".join(f"batch {b} ms | x" for b in args.batch)
    print(f"| flags | {header} | max diff vs default |")
    print("|---|" + "---:|---:|" * len(args.batch) + "---:|")
    for row in rows:
        cells = " | ".join(
            f"{row['ms'][b] * 1e3:.1f} | {best['default'][b] / row['ms'][b]:.2f}"
            for b in args.batch
        )
        print(f"| {row['set']} | {cells} | {row['max_diff']:.1e} |")
    for name, error in failed.items():
        print(f"| {name} | failed to start: {error} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "failed": failed}, indent=2) + "\n")


if __name__ == "__main__":
    main()
