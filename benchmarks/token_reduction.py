"""TR-BERT token reduction, measured: dev score, tokens kept, FLOPs and latency of the
reduced runtime against the unreduced model with the same length bucketing.

Each WORKDIR is a finished `configs/token_reduction.py` run. Its checkpoint (model and
policy params) is restored, or, where the checkpoints are gone (a finished grid or
reproduction deletes them), its export, which carries the policy nets
(`bertjax.inference.token_reduction.load`); the dev split is run through
`bertjax/inference/token_reduction.ReducedForward` (kept tokens gathered, later layers on
fewer tokens) and through its `dense` forward (same input bucketing, every token).
Latency: batch 32 over the whole dev split (length-sorted batches, as evaluation
batches them) and batch 1 over the first `--examples` dev examples, in passes timed
round-robin (reduced, dense, reduced, ...) after one warm-up pass that compiles every
bucket; the median pass is reported per batch. Writes WORKDIR/token_reduction.json
(token_reduction_{task}_{length}_p{threshold}.json with `--task`, `--max-seq-length`,
`--threshold`) and, without those, adds its numbers to WORKDIR/results.json under
`reduced_runtime`.
`--plot PNG` draws score vs latency relative to the dense model (batch 1 and 32) of every
WORKDIR's json.

  python benchmarks/token_reduction.py runs/tr-mrpc-a1 runs/tr-mrpc-a2 --batch 1 32 \
      --plot benchmarks/token_reduction.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
from ml_collections import ConfigDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bertjax.data import pipeline  # noqa: E402
from bertjax.inference import token_reduction as token_reduction_runtime  # noqa: E402
from bertjax.inference.token_reduction import ReducedForward  # noqa: E402
from bertjax.train import checkpoint, loop, loyalty  # noqa: E402
from bertjax.train import evaluation as evaluation_lib  # noqa: E402
from methods.dynamic.token_reduction import TokenReduction, layer_flops  # noqa: E402

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def restore(workdir: Path, task: str | None, max_seq_length: int | None):
    """`(run, reduced runtime, TokenReduction)` of a finished run: the model and policy
    params from its checkpoint, or from its export where no checkpoint is left."""
    config = ConfigDict(json.loads((workdir / "config.json").read_text()))
    if task:
        config.task = task
    if max_seq_length:
        config.data.max_seq_length = max_seq_length
    config.data.train_limit = 8  # only the dev split is used
    run = loop.create_train_state(config)
    methods = getattr(run.method, "methods", (run.method,))
    index = next(i for i, m in enumerate(methods) if isinstance(m, TokenReduction))
    method = methods[index]
    manager = checkpoint.make_manager(workdir, config.checkpoint.keep)
    if manager.latest_step() is None:
        if not (workdir / "export").is_dir():
            raise SystemExit(f"{workdir}: neither a checkpoint nor an export to measure")
        return run, token_reduction_runtime.load(workdir / "export"), method
    state = jax.device_get(checkpoint.restore_latest(manager, run.state))
    method_state = state.method_state[index] if len(methods) > 1 else state.method_state
    model_params, interventions = method.present(state.params, method_state, 0, train=False)
    return run, ReducedForward(run.model, model_params, interventions.tokens), method


def batches_of(encoded, batch_size: int, limit: int | None = None):
    """Host batches (inputs, index) of the dev split; batch 1 in example order."""
    if batch_size == 1:
        rows = range(min(limit or len(encoded), len(encoded)))
        return [
            ({k: b[k] for k in INPUTS}, b["index"])
            for b in (pipeline.collate(encoded, np.array([i]), 1) for i in rows)
        ]
    return [({k: b[k] for k in INPUTS}, b["index"]) for b in pipeline.eval_batches(encoded, 32)]


def one_pass(fn, batches):
    out = None
    for inputs, _ in batches:
        out = fn(*(inputs[k] for k in INPUTS))
    jax.block_until_ready(out)


def time_passes(candidates: dict, batches, repeats: int) -> dict[str, float]:
    """Median seconds per batch of each candidate, whole passes timed round-robin."""
    for fn in candidates.values():
        one_pass(fn, batches)  # compiles every bucket
    times = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            one_pass(candidates[name], batches)
            times[name].append((time.perf_counter() - start) / len(batches))
    return {name: statistics.median(t) for name, t in times.items()}


def predict(fn, batches, count: int, labels: int) -> np.ndarray:
    logits = np.zeros((count, labels), np.float32)
    for inputs, index in batches:
        out = np.asarray(fn(*(inputs[k] for k in INPUTS)))
        logits[index[index >= 0]] = out[index >= 0]
    return logits


def executed_flops(reduced: ReducedForward, method: TokenReduction, batches) -> tuple:
    """FLOPs of the encoder as run (bucket padding included): reduced and dense."""
    reduced_total = dense_total = 0.0
    shape = (method.hidden_size, method.intermediate_size)
    for inputs, index in batches:
        lengths = reduced.executed_lengths(*(inputs[k] for k in INPUTS))
        rows = len(index)
        for i in range(method.num_layers):
            stage = sum(1 for layer in method.layers if layer <= i)
            reduced_total += rows * layer_flops(lengths[stage], *shape)
            dense_total += rows * layer_flops(lengths[0], *shape)
    return reduced_total, dense_total


def measure(workdir: Path, args) -> dict:
    run, reduced, method = restore(workdir, args.task, args.max_seq_length)
    selection = reduced.selection
    if args.threshold is not None:  # the trained policy, kept where p >= another threshold
        selection = selection.replace(threshold=args.threshold)
        reduced = ReducedForward(reduced.model, reduced.params, selection)
    encoded, task = run.eval_data, run.task
    labels = 1 if task.is_regression else len(task.labels)
    dev = batches_of(encoded, 32)
    logits = predict(lambda *a: reduced(*a)[0], dev, len(encoded), labels)
    dense_logits = predict(reduced.dense, dev, len(encoded), labels)
    kept = np.zeros((len(encoded), len(method.layers)))
    for inputs, index in dev:
        _, counts = reduced(*(inputs[k] for k in INPUTS))
        kept[index[index >= 0]] = np.asarray(counts)[index >= 0]
    result = {
        "workdir": str(workdir),
        "task": task.name,
        "max_seq_length": encoded.max_seq_length,
        "alpha": method.alpha,
        "threshold": selection.threshold,
        "metrics": evaluation_lib.metrics_of(task, logits, encoded.labels),
        "dense_metrics": evaluation_lib.metrics_of(task, dense_logits, encoded.labels),
        "main_metric": task.main_metric,
        "mean_length": float(encoded.lengths.mean()),
        "tokens_kept_mean": {
            str(layer): float(kept[:, j].mean()) for j, layer in enumerate(method.layers)
        },
    }
    if run.teacher is not None:
        teacher = ReducedForward(run.teacher, jax.device_get(run.teacher_params), selection)
        teacher_logits = predict(teacher.dense, dev, len(encoded), labels)
        result["teacher_metrics"] = evaluation_lib.metrics_of(task, teacher_logits, encoded.labels)
        result["label_loyalty"] = loyalty.label_loyalty(logits, teacher_logits)
        result["probability_loyalty"] = loyalty.probability_loyalty(logits, teacher_logits)
    flops, dense_flops = executed_flops(reduced, method, dev)
    result["executed_flops_ratio_batch32"] = flops / dense_flops
    for batch_size in args.batch:
        batches = dev if batch_size == 32 else batches_of(encoded, 1, args.examples)
        seconds = time_passes(
            {"reduced": lambda *a: reduced(*a)[0], "dense": reduced.dense}, batches, args.repeats
        )
        result[f"batch{batch_size}"] = {
            "batches": len(batches),
            "reduced_ms": 1e3 * seconds["reduced"],
            "dense_ms": 1e3 * seconds["dense"],
            "speedup": seconds["dense"] / seconds["reduced"],
        }
        print(f"{workdir} batch {batch_size}: {result[f'batch{batch_size}']}", flush=True)
    result["compiled"] = len(reduced.traces)  # (segment, rows, length in, out)
    result["max_traces_per_executable"] = max(reduced.traces.values())
    return result


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch_sizes = sorted({int(k[5:]) for r in results for k in r if k.startswith("batch")})
    fig, axes = plt.subplots(1, len(batch_sizes), figsize=(6 * len(batch_sizes), 4.5))
    axes = np.atleast_1d(axes)
    for ax, batch_size in zip(axes, batch_sizes, strict=True):
        key = f"batch{batch_size}"
        for task in sorted({r["task"] for r in results}):
            rows = [r for r in results if r["task"] == task and key in r]
            # Relative latency (reduced / dense, timed round-robin in the same benchmark run):
            # absolute ms moved up to 2.8x between runs on the shared machine.
            rows = sorted(rows, key=lambda r: r[key]["reduced_ms"] / r[key]["dense_ms"])
            if not rows:
                continue
            metric = rows[0]["main_metric"]
            xs = [r[key]["reduced_ms"] / r[key]["dense_ms"] for r in rows]
            ys = [r["metrics"][metric] for r in rows]
            (line,) = ax.plot(xs, ys, "o-", label=f"{task} TR-BERT ({metric})")
            for r, x, y in zip(rows, xs, ys, strict=True):
                label = f"α={r['alpha']:g}"
                if r.get("threshold", 0.5) != 0.5:
                    label += f", p≥{r['threshold']:g}"
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            teacher = [r for r in rows if "teacher_metrics" in r]
            if teacher:
                ax.plot(
                    [1.0],
                    [teacher[0]["teacher_metrics"][metric]],
                    "s", color=line.get_color(), label=f"{task} teacher, dense (same buckets)",
                )  # fmt: skip
        ax.set_xlabel(f"latency at batch {batch_size}, relative to the dense model (measured)")
        ax.set_ylabel("dev score")
        ax.set_title(f"batch {batch_size}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="*", type=Path)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32], choices=[1, 32])
    parser.add_argument("--examples", type=int, default=100, help="batch-1 examples")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--task", default=None, help="evaluate on another task's dev split")
    parser.add_argument("--max-seq-length", type=int, default=None)
    parser.add_argument("--threshold", type=float, default=None, help="keep where p >= it")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of every WORKDIR's json")
    parser.add_argument("--plot-only", action="store_true", help="plot the saved jsons")
    args = parser.parse_args(argv)
    override = args.task or args.max_seq_length or args.threshold is not None
    results = []
    for workdir in args.workdirs:
        name = "token_reduction.json"
        if override:
            parts = [args.task, args.max_seq_length and str(args.max_seq_length)]
            parts.append(args.threshold is not None and f"p{args.threshold:g}")
            name = "_".join(["token_reduction", *(p for p in parts if p)]) + ".json"
        path = workdir / name
        if args.plot_only:
            results.append(json.loads(path.read_text()))
            continue
        result = measure(workdir, args)
        path.write_text(json.dumps(result, indent=2) + "\n")
        if not override and (workdir / "results.json").is_file():
            saved = json.loads((workdir / "results.json").read_text())
            saved["reduced_runtime"] = result
            (workdir / "results.json").write_text(json.dumps(saved, indent=2) + "\n")
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
