"""Where the eval forward's time goes: per-fusion times from a `jax.profiler` trace.

Traces `--calls` calls of the jitted forward (after warm-up), reads the Perfetto trace
JAX writes, maps each executed thunk (fusion, custom call) to the HLO op it computes
(the root's `op_name`, layer index replaced by `*`) and prints, per op, the summed
thread-time per call, its share, and what the fusion holds (dots, reductions, ...).
Thunks that XLA runs concurrently (e.g. independent q/k/v products) overlap, so the
sum can exceed the wall time; the wall time per call is printed too.

  python benchmarks/profile_forward.py minilm-l6-h384 --batch 32 --seq 128 --variant fp32
  python benchmarks/profile_forward.py DIR --variant int8-bf16 --top 25

Variants: fp32 (default), bf16 (`Interventions(matmul=BFLOAT16)`), int8 (stored int8,
W8A8), int8-bf16 (stored int8 weights, bf16 matmuls: W8A16).
"""

import argparse
import collections
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("fp32", "bf16", "int8", "int8-bf16")


def build(model_dir: str, batch: int, seq: int, variant: str):
    """The `bench.Forward` of a variant of a checkpoint."""
    import jax

    from bertjax import bench
    from bertjax.models.interventions import BFLOAT16, Interventions

    model, params = bench.load_model(model_dir)
    if variant.startswith("int8"):
        from methods.quant.storage import quantize_params

        params = jax.device_get(jax.jit(quantize_params)(params))
    interventions = Interventions(matmul=BFLOAT16) if variant.endswith("bf16") else None
    return bench.make_forward(model, params, batch, seq, interventions=interventions)


def hlo_ops(hlo_text: str) -> dict[str, dict]:
    """Instruction name -> `{op, opcodes}`: its `op_name` metadata and, for a fusion,
    the count of each opcode in the computation it calls."""
    computations, current = {}, None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            current = computations.setdefault(header.group(1), collections.Counter())
            continue
        inst = re.match(r"\s*(?:ROOT )?%[\w.\-]+ = \S+ ([\w\-]+)\(", line)
        if current is not None and inst:
            current[inst.group(1)] += 1
    ops = {}
    for line in hlo_text.splitlines():
        inst = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = \S+ ([\w\-]+)\(", line)
        if not inst:
            continue
        called = re.search(r"calls=%([\w.\-]+)", line)
        op_name = re.search(r'op_name="([^"]+)"', line)
        opcodes = computations.get(called.group(1), {}) if called else {inst.group(2): 1}
        ops[inst.group(1)] = {"op": op_name.group(1) if op_name else "", "opcodes": opcodes}
    return ops


def op_label(op_name: str) -> str:
    """`jit(forward)/BertModel/bert/encoder/layer/3/attention/self/add` ->
    `encoder/layer/*/attention/self/add`."""
    label = op_name.split("/bert/", 1)[-1] if "/bert/" in op_name else op_name
    return re.sub(r"/(layer|successor)/\d+/", r"/\1/*/", label) or "(no op_name)"


INTERESTING = (
    "dot",
    "convolution",
    "reduce",
    "exponential",
    "erf",
    "tanh",
    "rsqrt",
    "divide",
    "transpose",
    "gather",
    "convert",
    "round-nearest-even",
    "clamp",
    "broadcast",
)


def thunk_times(trace_dir: Path, calls: int) -> dict[str, float]:
    """Thunk name -> milliseconds per call, summed over its executions in the trace."""
    trace = sorted(trace_dir.rglob("perfetto_trace.json.gz"))[-1]
    data = json.load(gzip.open(trace))
    events = data["traceEvents"] if isinstance(data, dict) else data
    times = collections.defaultdict(float)
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or name.startswith(("ThunkExecutor", "$")):
            continue
        times[name] += event.get("dur", 0) / 1000 / calls
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint directory or $BERTJAX_MODELS name")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--variant", choices=VARIANTS, default="fp32")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import jax

    forward = build(args.model, args.batch, args.seq, args.variant)
    jax.block_until_ready(forward())
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(forward())
        walls.append(time.perf_counter() - start)
    ops = hlo_ops(forward.fn.lower(*forward.args).compile().as_text())
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        for _ in range(args.calls):
            jax.block_until_ready(forward())
        jax.profiler.stop_trace()
        times = thunk_times(Path(tmp), args.calls)

    by_op = collections.defaultdict(
        lambda: {"ms": 0.0, "thunks": 0, "opcodes": collections.Counter()}
    )
    for thunk, ms in times.items():
        info = ops.get(thunk, {"op": "", "opcodes": {}})
        unnamed = "(" + re.sub(r"[.]\d+$", "", thunk) + ")"
        row = by_op[op_label(info["op"]) if info["op"] else unnamed]
        row["ms"] += ms
        row["thunks"] += 1
        row["opcodes"].update({k: v for k, v in info["opcodes"].items() if k in INTERESTING})
    total = sum(row["ms"] for row in by_op.values())
    wall, load = min(walls) * 1e3, os.getloadavg()[0]
    print(
        f"{args.model} {args.variant} batch {args.batch} seq {args.seq}: wall {wall:.1f} ms "
        f"untraced (best of 3), thunk time {total:.1f} ms/call traced; load {load:.2f}"
    )
    print("| op (root of the fusion) | ms/call | % | thunks | holds |\n|---|---:|---:|---:|---|")
    rows = sorted(by_op.items(), key=lambda item: -item[1]["ms"])
    for label, row in rows[: args.top]:
        holds = ", ".join(f"{k}×{v}" for k, v in sorted(row["opcodes"].items()))
        share = 100 * row["ms"] / total
        print(f"| {label} | {row['ms']:.2f} | {share:.1f} | {row['thunks']} | {holds} |")
    if args.json:
        rows_json = [{"op": k, "ms": v["ms"], "thunks": v["thunks"]} for k, v in rows]
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"json": str(args.json)},
                    "wall_ms": min(walls) * 1e3,
                    "rows": rows_json,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
