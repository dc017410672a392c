"""Inference latency and size of (compressed) bertjax models, side by side with PyTorch.

Each DIR (HF layout, e.g. a run's `export/`, or a name under $BERTJAX_MODELS)
gets bertjax's jitted fp32 eval forward, with its own head if it has one, on a
fixed random batch [B, T] with a full attention mask. `--torch DIR` adds
transformers' fp32 PyTorch model of DIR (`BertForSequenceClassification` for a
classifier, else `BertModel`), run under `torch.inference_mode`, as the
baseline. At each batch size every model is warmed up (jit compilation is not
timed), then timed one call at a time round-robin (`bertjax.bench.interleave`);
best and median per call are reported, and speed-ups from the best times.
`--int8` adds, for each DIR, the same model with every matmul in real int8
(`methods/quant/int8.py`: dynamic per-token/per-channel scales, int32
accumulation, weights re-quantized each call, so its MB is the fp32 size). A DIR
holding a stored int8 artifact (e.g. a `quant_ptq.py:int8=True` run's export) loads
and runs as stored, at its int8 size. `--bf16` adds each DIR with bfloat16 matmuls
(`Interventions(matmul=BFLOAT16)`; a stored int8 DIR then runs W8A16). `--without
attention norm` adds each DIR with that fusion off, to measure it: XLA's attention
instead of our kernel (`Matmul.fused_attention`), the int8 `output` blocks' bias,
residual and LayerNorm as XLA ops after the product (`Matmul.stored_int8_norm`).

  python benchmarks/latency.py runs/mrpc/export runs/mrpc-mov90/export \
      --torch runs/mrpc/export --batch 1 32 --seq 128 --repeats 20 --json runs/latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bertjax import bench  # noqa: E402
from bertjax.bench.peers import torch_forward  # noqa: E402
from bertjax.models.interventions import BFLOAT16, Float32, Interventions  # noqa: E402
from methods.quant import INT8_PRODUCTS  # noqa: E402


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def set_threads(threads: int | None, use_torch: bool) -> int:
    """Pins this process to `threads` cores (both frameworks) and sets torch's thread count.

    None: every core this process may use. Returns the count.
    """
    cores = sorted(os.sched_getaffinity(0))
    threads = threads or len(cores)
    if threads < len(cores):
        os.sched_setaffinity(0, cores[:threads])
    if use_torch:
        import torch

        torch.set_num_threads(threads)
    return threads


def measure(
    dirs: list[Path],
    torch_dir: Path | None,
    batch_sizes: list[int],
    seq_len: int,
    *,
    warmup: int,
    repeats: int,
    int8: bool = False,
    bf16: bool = False,
    without: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """One result row per model and batch size (torch baseline first), speed-ups filled in."""
    loaded = {str(d): bench.load_model(d) for d in dirs}
    model_sizes = {name: bench.model_size(params) for name, (_, params) in loaded.items()}
    int8_matmuls = Interventions(matmul=INT8_PRODUCTS)
    variants = {"": None, " int8": int8_matmuls} if int8 else {"": None}
    if bf16:
        variants[" bf16"] = Interventions(matmul=BFLOAT16)
    for fusion in without:
        variants[f" without-{fusion}"] = Interventions(matmul=WITHOUT[fusion])
    rows = []
    for batch_size in batch_sizes:
        candidates, sizes, heads = {}, {}, {}
        if torch_dir is not None:
            name = f"torch:{torch_dir}"
            candidates[name], sizes[name] = torch_forward(torch_dir, batch_size, seq_len)
            heads[name] = bench.checkpoint_head(torch_dir)
        for base, (model, params) in loaded.items():
            for suffix, interventions in variants.items():
                name = base + suffix
                candidates[name] = bench.make_forward(
                    model, params, batch_size, seq_len, interventions=interventions
                )
                sizes[name], heads[name] = model_sizes[base], model.head
        times = bench.interleave(candidates, warmup=warmup, repeats=repeats)
        batch_rows = [
            {
                "model": name,
                "framework": "torch" if name.startswith("torch:") else "bertjax",
                "head": heads[name],
                "batch": batch_size,
                "seq": seq_len,
                **sizes[name],
                **bench.summarize(times[name]),
                "times_ms": [1e3 * t for t in times[name]],
            }
            for name in candidates
        ]
        first_jax = next(r for r in batch_rows if r["framework"] == "bertjax")
        for row in batch_rows:
            row["speedup_vs_first"] = first_jax["best_ms"] / row["best_ms"]
            if torch_dir is not None:
                row["speedup_vs_torch"] = batch_rows[0]["best_ms"] / row["best_ms"]
        rows += batch_rows
    return rows


def print_table(rows: list[dict[str, Any]], has_torch: bool) -> None:
    """A markdown table of the rows; speed-ups are ratios of best times."""
    columns = "| model | batch | params | nonzero | MB | best ms | median ms |"
    print(columns + (" vs torch |" if has_torch else "") + " vs first |")
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if has_torch else "") + "---:|")
    for row in rows:
        line = (
            f"| {row['model']} | {row['batch']} | {row['params']:,} | {row['nonzero_params']:,}"
            f" | {row['bytes'] / 1e6:.1f} | {row['best_ms']:.2f} | {row['median_ms']:.2f} |"
        )
        if has_torch:
            line += f" {row['speedup_vs_torch']:.2f}x |"
        print(line + f" {row['speedup_vs_first']:.2f}x |")


class _NoAttentionKernel(Float32):
    fused_attention = False


class _NoNormFusion(Float32):
    def stored_int8_norm(self, *args):
        return None


WITHOUT = {"attention": _NoAttentionKernel(), "norm": _NoNormFusion()}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parses flags, measures, prints the table and writes `--json`; returns the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="bertjax checkpoint dirs")
    parser.add_argument("--torch", metavar="DIR", help="PyTorch baseline checkpoint dir")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per model")
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--json", metavar="OUT", type=Path, help="write the rows here")
    parser.add_argument("--int8", action="store_true", help="also time each DIR in real int8")
    parser.add_argument("--bf16", action="store_true", help="also time each DIR in bf16 matmuls")
    parser.add_argument("--without", nargs="+", default=[], choices=sorted(WITHOUT),
                        help="also time each DIR with this fusion off")  # fmt: skip
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 1 or min(args.batch) < 1 or args.seq < 1:
        parser.error("--repeats, --warmup, --batch and --seq must be >= 1")
    try:
        dirs = [bench.checkpoint_dir(d) for d in args.dirs]
        torch_dir = bench.checkpoint_dir(args.torch) if args.torch else None
    except FileNotFoundError as err:
        parser.error(str(err))
    if torch_dir is not None:
        try:
            import transformers

            # The load check in torch_forward replaces transformers' load report.
            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
        except ImportError:
            parser.error("--torch needs torch and transformers installed")
    threads = set_threads(args.threads, use_torch=torch_dir is not None)
    load = os.getloadavg()[0]
    if load > 0.5 * threads:
        # Interleaving spreads noise, but frameworks suffer unequally from contention:
        # torch's OpenMP threads busy-wait at barriers and slow down many-fold.
        print(
            f"warning: load average {load:.1f} on {threads} core(s): other jobs are running, "
            "times are not comparable to an idle machine's",
            file=sys.stderr,
        )
    try:
        rows = measure(
            dirs,
            torch_dir,
            args.batch,
            args.seq,
            warmup=args.warmup,
            repeats=args.repeats,
            int8=args.int8,
            bf16=args.bf16,
            without=args.without,
        )
    except (ValueError, RuntimeError) as err:
        parser.error(str(err))
    versions = {"jax": jax.__version__}
    if torch_dir is not None:
        import torch
        import transformers

        versions.update(torch=torch.__version__, transformers=transformers.__version__)
    setup = {
        "seq": args.seq,
        "batch": args.batch,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "threads": threads,
        "int8": args.int8,
        "bf16": args.bf16,
        "without": args.without,
        "load_average_at_start": load,
        "device": str(jax.devices()[0].device_kind),
        "cpu": cpu_name(),
        "versions": versions,
    }
    print(
        f"fp32{' and int8' if args.int8 else ''}{' and bf16' if args.bf16 else ''} inference, "
        f"seq {args.seq}, "
        f"{threads} thread(s), {setup['device']}, "
        f"best/median of {args.repeats} interleaved calls, {args.warmup} warm-up"
    )
    print_table(rows, torch_dir is not None)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
