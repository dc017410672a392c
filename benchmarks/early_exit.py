"""Early exit's measured speed and score: every point of a run's sweep, side by side with
the same model run without exits.

Each RUN is a `configs/early_exit.py` workdir (its `export/` holds the model and its
exit heads, its results.json the sweep). On the task's dev set, padded to `--seq`
(128: the north star's shape), the script
- scores every entropy threshold / patience of the run's sweep (or `--thresholds` /
  `--patiences`: no retraining) from every layer's logits (exact: the
  runtime's exits are checked to be these on the timed examples), with label and
  probability loyalty to `--teacher` (the fine-tuned model it started from);
- times, round-robin (`bench.interleave`), best of `--repeats` passes: batch 1 over the
  first `--examples` dev examples (`ExitRunner.single`: one `lax.while_loop`), and
  batch 32 over the first `--batches` batches (`ExitRunner.batched`: exited rows leave,
  the rest are compacted into smaller buckets), against the model without exits
  (`bench.jitted_forward`, every layer) on the same inputs;
- prints a table, writes `--json` and a two-panel `--plot` (score vs speed-up), and with
  `--write-results` puts each run's measured rows into its results.json
  (`early_exit.latency`: ms and speed-up at batch 1 and 32 per point, beside the same
  model without exits, with the command and the load average).

  python benchmarks/early_exit.py runs/ee/mrpc-deebert runs/ee/mrpc-pabee --task mrpc \
      --teacher runs/teacher/mrpc/export --json benchmarks/early_exit_mrpc.json \
      --plot benchmarks/early_exit_mrpc.png
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bertjax import bench  # noqa: E402
from bertjax.data import tasks, tokenizer  # noqa: E402
from bertjax.inference import early_exit as runtime  # noqa: E402
from bertjax.models.interventions import compute_interventions  # noqa: E402
from bertjax.train import evaluation, loyalty  # noqa: E402
from methods.dynamic import exits  # noqa: E402
from methods.dynamic.early_exit import split  # noqa: E402


def padded(encoded, indices, width: int) -> tuple[np.ndarray, ...]:
    """`(input_ids, attention_mask, token_type_ids)` [len(indices), width], zero-padded."""
    ids = np.zeros((len(indices), width), np.int32)
    types, mask = np.zeros_like(ids), np.zeros_like(ids)
    for row, example in enumerate(indices):
        n = len(encoded.input_ids[example])
        ids[row, :n] = encoded.input_ids[example]
        types[row, :n] = encoded.token_type_ids[example]
        mask[row, :n] = 1
    return ids, mask, types


def batches(encoded, width: int, size: int, count: int | None = None):
    """Dev examples in order, `size` at a a time (the last batch may be smaller)."""
    stops = range(0, len(encoded), size)
    if count is not None:
        stops = list(stops)[:count]
    return [padded(encoded, range(s, min(s + size, len(encoded))), width) for s in stops]


def main_metric(task, logits, labels) -> float:
    return float(evaluation.metrics_of(task, logits, labels)[task.main_metric])


def run(args) -> dict:
    task = tasks.get_task(args.task)
    runs = [Path(r) for r in args.runs]
    tok = tokenizer.load_tokenizer(str(runs[0] / "export"))
    dev = tokenizer.load_encoded(task, tasks.eval_split(task), tok, args.seq)
    interventions = compute_interventions(args.compute)
    head = "regression" if task.is_regression else "classification"
    teacher_logits = None
    if args.teacher:
        teacher, teacher_params = bench.load_model(args.teacher)
        forward = bench.jitted_forward(teacher, interventions)
        teacher_logits = np.concatenate(
            [np.asarray(forward(teacher_params, *b)) for b in batches(dev, args.seq, 32)]
        )
    timed32 = batches(dev, args.seq, 32, args.batches)
    timed1 = batches(dev, args.seq, 1, args.examples)
    rows, candidates, checks = [], {}, {}
    for directory in runs:
        swept = json.loads((directory / "results.json").read_text())["early_exit"]
        model, params = runtime.load(directory / "export", head=head, int8=args.int8)
        runner = runtime.ExitRunner(model, params, interventions)
        plain = bench.jitted_forward(model, interventions)
        model_params = split(params)[0]
        layer_logits = np.concatenate([runner.full(*b) for b in batches(dev, args.seq, 32)])
        label = directory.name + ("-int8" if args.int8 else "")
        candidates[f"{label}|none|b32"] = lambda p=plain, m=model_params: [
            p(m, *b) for b in timed32
        ]
        candidates[f"{label}|none|b1"] = lambda p=plain, m=model_params: [p(m, *b) for b in timed1]
        points = [(p["criterion"], p["value"]) for p in swept["sweep"]]
        if args.thresholds is not None or args.patiences is not None:
            points = [("entropy", t) for t in args.thresholds or ()] * (not task.is_regression)
            points += [("patience", p) for p in args.patiences or ()]
        for kind, value in points:
            criterion = exits.Criterion(kind, value, task.is_regression)
            exit_at = exits.exit_layers(criterion, layer_logits)
            logits = exits.logits_at_exit(layer_logits, exit_at)
            name = f"{label}|{criterion.kind}={criterion.value:g}"
            row = {
                "run": label,
                "criterion": criterion.kind,
                "value": criterion.value,
                "score": main_metric(task, logits, dev.labels),
                "mean_exit_layer": float(np.mean(exit_at + 1)),
                "layers": runner.num_layers,
            }
            if teacher_logits is not None:
                row["label_loyalty"] = loyalty.label_loyalty(logits, teacher_logits)
                row["probability_loyalty"] = loyalty.probability_loyalty(logits, teacher_logits)
            rows.append(row)
            # The runtime's exits on the timed batches are the replayed ones.
            got = np.concatenate([runner.batched(criterion, *b)[1] for b in timed32])
            checks[name] = bool(np.array_equal(got, exit_at[: len(got)]))
            candidates[f"{name}|b32"] = lambda r=runner, c=criterion: [
                r.batched(c, *b) for b in timed32
            ]
            candidates[f"{name}|b1"] = lambda r=runner, c=criterion: [
                r.single(c, *b) for b in timed1
            ]
        rows.append(
            {
                "run": label,
                "criterion": "none",
                "value": None,
                "score": main_metric(task, layer_logits[:, -1], dev.labels),
                "mean_exit_layer": float(runner.num_layers),
                "layers": runner.num_layers,
                **(
                    {
                        "label_loyalty": loyalty.label_loyalty(layer_logits[:, -1], teacher_logits),
                        "probability_loyalty": loyalty.probability_loyalty(
                            layer_logits[:, -1], teacher_logits
                        ),
                    }
                    if teacher_logits is not None
                    else {}
                ),
            }
        )
    if not all(checks.values()):
        bad = [name for name, ok in checks.items() if not ok]
        raise SystemExit(f"runtime exits differ from the replayed ones: {bad}")
    times = bench.interleave(candidates, warmup=1, repeats=args.repeats)
    best = {name: min(values) for name, values in times.items()}
    for row in rows:
        stem = f"{row['run']}|{row['criterion']}" + (
            f"={row['value']:g}" if row["criterion"] != "none" else ""
        )
        for b, count in (("b32", len(timed32)), ("b1", len(timed1))):
            base = best[f"{row['run']}|none|{b}"]
            row[f"ms_{b}"] = 1e3 * best[f"{stem}|{b}"] / count
            row[f"speedup_{b}"] = base / best[f"{stem}|{b}"]
    return {
        "task": task.name,
        "metric": task.main_metric,
        "seq": args.seq,
        "compute": args.compute,
        "timed": {"batch32_batches": len(timed32), "batch1_examples": len(timed1)},
        "repeats": args.repeats,
        "load_average": os.getloadavg(),
        "dev_examples": len(dev),
        "rows": rows,
    }


def print_table(result: dict) -> None:
    print(
        f"{result['task']} dev ({result['dev_examples']}), seq {result['seq']}, "
        f"{result['compute']}, load average {result['load_average'][0]:.2f}"
    )
    header = (
        f"| run | exit rule | {result['metric']} | mean layers | b1 ms | b1 x | b32 ms | b32 x |"
    )
    loyal = "label_loyalty" in result["rows"][0]
    print(header + (" label loyalty |" if loyal else ""))
    print("|---" * (8 + loyal) + "|")
    for r in result["rows"]:
        rule = "none" if r["criterion"] == "none" else f"{r['criterion']} {r['value']:g}"
        line = (
            f"| {r['run']} | {rule} | {r['score']:.4f} | {r['mean_exit_layer']:.2f} | "
            f"{r['ms_b1']:.1f} | {r['speedup_b1']:.2f} | "
            f"{r['ms_b32']:.1f} | {r['speedup_b32']:.2f} |"
        )
        print(line + (f" {r['label_loyalty']:.3f} |" if loyal else ""))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, b in zip(axes, ("b1", "b32"), strict=True):
        for (run, kind), marker in zip(
            sorted(
                {(r["run"], r["criterion"]) for r in result["rows"] if r["criterion"] != "none"}
            ),
            "os^vD<>",
            strict=False,
        ):
            points = sorted(
                (r[f"speedup_{b}"], r["score"])
                for r in result["rows"]
                if r["run"] == run and r["criterion"] == kind
            )
            ax.plot(*zip(*points, strict=True), marker=marker, label=f"{run} ({kind})")
        for r in result["rows"]:
            if r["criterion"] == "none":
                ax.scatter([1.0], [r["score"]], color="black", zorder=3)
        ax.axvline(1.0, color="gray", lw=0.5)
        ax.set_xlabel(f"measured speed-up vs all layers ({'batch 1' if b == 'b1' else 'batch 32'})")
        ax.set_title(f"{result['task']}: seq {result['seq']}, {result['compute']}")
    axes[0].set_ylabel(f"dev {result['metric']}")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="configs/early_exit.py workdirs")
    parser.add_argument("--task", required=True)
    parser.add_argument("--teacher", default="", help="the model the runs started from")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--compute", default="fp32", help="fp32 or bf16 matmuls")
    parser.add_argument(
        "--int8", action="store_true", help="the backbone stored in int8 (W8A8), heads float"
    )
    parser.add_argument("--examples", type=int, default=64, help="batch-1 examples timed")
    parser.add_argument("--batches", type=int, default=4, help="batch-32 batches timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--thresholds", type=float, nargs="*", help="instead of the run's sweep")
    parser.add_argument("--patiences", type=int, nargs="*", help="instead of the run's sweep")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument(
        "--write-results", action="store_true", help="add the timings to each run's results.json"
    )
    args = parser.parse_args(argv)
    result = run(args)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(result, args.plot)
    if args.write_results:
        write_results(result, args.runs, "python " + " ".join(sys.argv))
    return result


def write_results(result: dict, runs: list[str], command: str) -> None:
    """Adds each run's measured rows to its results.json as `early_exit.latency`."""
    keep = ("criterion", "value", "score", "mean_exit_layer", "ms_b1", "speedup_b1",
            "ms_b32", "speedup_b32")  # fmt: skip
    for directory in map(Path, runs):
        path = directory / "results.json"
        results = json.loads(path.read_text())
        results["early_exit"]["latency"] = {
            "command": command,
            "load_average": result["load_average"],
            "seq": result["seq"],
            "compute": result["compute"],
            "timed": result["timed"],
            "points": [
                {k: row[k] for k in keep} for row in result["rows"] if row["run"] == directory.name
            ],
        }
        path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
