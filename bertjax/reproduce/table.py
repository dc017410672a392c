"""The reproduction's outputs: per-task tables (mean ± std over seeds), the claims
table, and plots (score vs measured latency, score vs shipped bytes)."""

import json
import math
from pathlib import Path

import numpy as np

from bertjax.data.tasks import get_task
from bertjax.report import shipped_bytes
from bertjax.reproduce import claims as claims_lib
from bertjax.reproduce import peers as peers_lib
from bertjax.reproduce.cells import workdir
from bertjax.reproduce.grid import TASKS, TEACHER, Cell
from bertjax.train.metrics import main_score


def collect(runs: Path, tasks, cells: list[Cell], seeds: int) -> dict:
    """`{task: {cell: [results per finished seed]}}`; seed 0's results carry its
    `latency` (latency.json) when measured, the teacher's its `peers` (peers.json)."""
    out = {}
    for task in tasks:
        found = {}
        for cell in cells:
            per_seed = []
            for seed in range(seeds):
                directory = workdir(runs, task, cell, seed)
                path = directory / "results.json"
                if not path.exists():
                    continue
                results = {**json.loads(path.read_text()), "seed": seed}
                latency = directory / "latency.json"
                if latency.exists():
                    results["latency"] = json.loads(latency.read_text())
                if (directory / peers_lib.FILE).exists():
                    results["peers"] = json.loads((directory / peers_lib.FILE).read_text())
                per_seed.append(results)
            if per_seed:
                found[cell.name] = per_seed
        out[task] = found
    return out


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} ({len(values)})"


# A cell's timing is marked when the PyTorch teacher timed beside it took this much
# longer than the task's median: the machine was busy while it was timed.
BUSY = 1.5
BUSY_NOTE = (f"†: timed while the machine was busy (the PyTorch teacher beside it took > "
             f"{BUSY:g}x the task's median time); its ratio is not comparable.")  # fmt: skip


def _torch_medians(runs: dict) -> dict[str, float]:
    """Per batch size, the median PyTorch-teacher time over the task's timed cells."""
    times: dict[str, list[float]] = {}
    for results in runs.values():
        for batch, entry in (results[0].get("latency") or {}).items():
            if isinstance(entry, dict) and "torch_teacher_ms" in entry:
                times.setdefault(batch, []).append(entry["torch_teacher_ms"])
    return {batch: float(np.median(v)) for batch, v in times.items()}


def _latency(results: list[dict], batch: str, medians: dict | None = None) -> str:
    latency = results[0].get("latency")
    if not latency:
        return "-"
    entry = latency[batch]
    busy = medians and entry["torch_teacher_ms"] > BUSY * medians.get(batch, math.inf)
    return f"{entry['ms']:.1f} ({entry['speedup_vs_torch_teacher']:.2f}x){' †' if busy else ''}"


def _mean_field(results: list[dict], field: str) -> str:
    values = [r[field] for r in results if isinstance(r.get(field), int | float)]
    return f"{np.mean(values):.3f}" if values else "-"


PEERS_ABSENT = (
    "Peers (the seed-0 teacher in PyTorch fp32 and ONNX Runtime dynamic int8): not "
    "measured. They are measured with latency (not in the smoke budget, not with "
    "--no-latency) where torch, onnx and onnxruntime are installed; rerunning the same "
    "command fills them in."
)


def peer_points(task: str, runs: dict) -> list[dict]:
    """The reference points of the seed-0 teacher's peers.json, [] without one: per
    runtime its `label`, dev `score` (points), `bytes`, `ms` and `speedup` (vs the
    PyTorch teacher in the same rounds) per batch ("b1", "b32"), and its loyalty to the
    PyTorch teacher (None for the teacher itself and for STS-B)."""
    teacher = runs.get(TEACHER) or [{}]
    peers = teacher[0].get("peers")
    if not peers:
        return []
    dev, batches = peers["dev"], ("b1", "b32")
    loyalty = dev["ort_int8_loyalty"]
    return [
        {
            "label": "PyTorch fp32 teacher",
            "score": 100 * main_score(task, dev["torch_teacher"]),
            "bytes": peers["torch_teacher_bytes"],
            "ms": {b: peers[b]["torch_teacher_ms"] for b in batches},
            "speedup": {b: 1.0 for b in batches},
            "label_loyalty": None,
            "probability_loyalty": None,
        },
        {
            "label": "ORT int8 teacher",
            "score": 100 * main_score(task, dev["ort_int8"]),
            "bytes": peers["ort_int8_bytes"],
            "ms": {b: peers[b]["ort_int8_ms"] for b in batches},
            "speedup": {b: peers[b]["ort_int8_speedup_vs_torch_teacher"] for b in batches},
            "label_loyalty": loyalty.get("label_loyalty"),
            "probability_loyalty": loyalty.get("probability_loyalty"),
        },
    ]


def _peer_row(point: dict, teacher_score: float, params: int) -> str:
    """A table row of one peer: its seed-0 score, % of the PyTorch teacher's, its sizes."""
    loyalties = [point[f] for f in ("label_loyalty", "probability_loyalty")]
    loyalties = " | ".join("-" if value is None else f"{value:.3f}" for value in loyalties)
    latency = " | ".join(
        f"{point['ms'][b]:.1f} ({point['speedup'][b]:.2f}x)" for b in ("b1", "b32")
    )
    return (
        f"| {point['label']} | peer | {point['score']:.2f} (seed 0) | "
        f"{100 * point['score'] / teacher_score:.1f} | {params / 1e6:.2f}M | "
        f"{point['bytes'] / 1e6:.2f} | {latency} | {loyalties} |"
    )


def task_table(task: str, runs: dict, cells: list[Cell]) -> list[str]:
    """Markdown lines for one task: the teacher row first, the seed-0 teacher's peers
    (PyTorch fp32, ONNX Runtime int8) next or a note on their absence, then every
    cell that ran."""
    metric = get_task(task).main_metric
    teacher = [100 * main_score(task, r["metrics"]) for r in runs.get(TEACHER, [])]
    lines = [
        f"### {task} ({metric}, points)",
        "",
        "| method | family | score (mean ± std, seeds) | % of teacher | params | shipped MB | "
        "b1 ms (x PyTorch teacher) | b32 ms (x PyTorch teacher) | label loyalty | prob. loyalty |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    medians = _torch_medians(runs)
    for cell in cells:
        results = runs.get(cell.name)
        if not results:
            continue
        scores = [100 * main_score(task, r["metrics"]) for r in results]
        share = f"{100 * np.mean(scores) / np.mean(teacher):.1f}" if teacher else "-"
        size = shipped_bytes(results[0])
        lines.append(
            f"| {cell.name} | {cell.family} | {_mean_std(scores)} | {share} | "
            f"{results[0]['params'] / 1e6:.2f}M | {size / 1e6 if size else math.nan:.2f} | "
            f"{_latency(results, 'b1', medians)} | {_latency(results, 'b32', medians)} | "
            f"{_mean_field(results, 'label_loyalty')} | "
            f"{_mean_field(results, 'probability_loyalty')} |"
        )
        if cell.name == TEACHER:
            points = peer_points(task, runs)
            lines += [_peer_row(p, points[0]["score"], results[0]["params"]) for p in points]
    if any(line.count(" †") for line in lines):
        lines += ["", BUSY_NOTE]
    if not peer_points(task, runs):
        return lines + ["", PEERS_ABSENT, ""]
    return lines + [
        "",
        "Peer rows: the seed-0 teacher in PyTorch fp32 and ONNX Runtime dynamic int8 "
        "(peers.json): dev score, % of the PyTorch teacher's, the .onnx / fp32 parameter "
        "bytes, latency and loyalty vs the PyTorch teacher timed in the same rounds.",
        "",
    ]


def claims_table(collected: dict, claim_list) -> tuple[list[str], list[dict]]:
    """Markdown lines and records of every claim on every task where it ran."""
    lines = [
        "| claim | source | task | a (mean) | b (mean) | a - b ± 2 se | seeds | verdict |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    records = []
    for claim in claim_list:
        for task, runs in collected.items():
            decided = claims_lib.decide(claim, runs)
            if decided is None:
                continue
            spread = "-" if decided["se"] is None else f"{2 * decided['se']:.2f}"
            lines.append(
                f"| {claim.name} | {claim.source} | {task} | {claim.a_label} "
                f"{np.mean(decided['a']):.2f} | {claim.b_label} {np.mean(decided['b']):.2f} | "
                f"{decided['d']:+.2f} ± {spread} | {decided['n']} | {decided['verdict']} |"
            )
            records.append({"claim": claim.name, "task": task, **decided})
    return lines, records


# The project's north star: >= 97 % of the teacher's score on average over the five
# tasks, at >= 8x the PyTorch fp32 teacher's speed at batch 32 (seq 128).
NORTH_STAR_SHARE, NORTH_STAR_SPEEDUP = 97.0, 8.0


def north_star(collected: dict, cells: list[Cell]) -> list[dict]:
    """Per cell finished on every task for at least one seed: the seeds finished on all
    of `grid.TASKS`, per such seed the mean over the tasks of its score as a % of its own
    teacher's (same task and seed: the one it was made from), the worst task of any seed,
    the seed-0 speed-ups vs the PyTorch teacher per batch (min and max over the tasks,
    None where a task is untimed), and whether the goal is met on every seed."""
    if any(task not in collected for task in TASKS):
        return []
    out = []
    for cell in cells:
        if cell.name == TEACHER:
            continue
        shares: dict[int, dict[str, float]] = {}
        for task in TASKS:
            runs = collected[task]
            teacher = {r["seed"]: main_score(task, r["metrics"]) for r in runs.get(TEACHER, [])}
            for r in runs.get(cell.name, []):
                if r["seed"] in teacher:
                    share = 100 * main_score(task, r["metrics"]) / teacher[r["seed"]]
                    shares.setdefault(r["seed"], {})[task] = share
        complete = sorted(seed for seed, by_task in shares.items() if len(by_task) == len(TASKS))
        if not complete:
            continue
        speedups = {}
        for batch in ("b1", "b32"):
            timed = [(collected[t][cell.name][0].get("latency") or {}).get(batch) for t in TASKS]
            values = [e["speedup_vs_torch_teacher"] for e in timed if isinstance(e, dict)]
            speedups[batch] = (min(values), max(values)) if len(values) == len(TASKS) else None
        means = [float(np.mean(list(shares[seed].values()))) for seed in complete]
        worst = min((v, task, seed) for seed in complete for task, v in shares[seed].items())
        met = (all(m >= NORTH_STAR_SHARE for m in means) and speedups["b32"] is not None
               and speedups["b32"][0] >= NORTH_STAR_SPEEDUP)  # fmt: skip
        out.append({"cell": cell.name, "seeds": complete, "mean_share": means,
                    "worst": {"share": worst[0], "task": worst[1], "seed": worst[2]},
                    "speedup": speedups, "met": met})  # fmt: skip
    return sorted(out, key=lambda row: -float(np.mean(row["mean_share"])))


def north_star_table(rows: list[dict]) -> list[str]:
    """Markdown lines of `north_star`'s rows, or [] before every task has run."""
    if not rows:
        return []
    span = lambda pair: "-" if pair is None else f"{pair[0]:.2f}-{pair[1]:.2f}x"  # noqa: E731
    lines = [
        "## North star",
        "",
        f"Goal: >= {NORTH_STAR_SHARE:g} % of the teacher's score on average over the five "
        f"tasks on every seed, at >= {NORTH_STAR_SPEEDUP:g}x the PyTorch fp32 teacher at "
        "batch 32 on every task (seed 0's timing). Cells finished on all five tasks for at "
        "least one seed; each seed's score as a % of the teacher it was made from (same task "
        "and seed; the per-task tables and the claims divide by the teachers' mean).",
        "",
        "| method | seeds on all tasks | mean % of teacher per seed | worst task (seed) | "
        "b32 x PyTorch teacher | b1 x PyTorch teacher | goal met |",
        "|---|---:|---|---|---:|---:|---|",
    ]
    for row in rows:
        worst = row["worst"]
        lines.append(
            f"| {row['cell']} | {len(row['seeds'])} | "
            + ", ".join(f"{v:.1f}" for v in row["mean_share"])
            + f" | {worst['task']} {worst['share']:.1f} ({worst['seed']}) | "
            f"{span(row['speedup']['b32'])} | {span(row['speedup']['b1'])} | "
            f"{'yes' if row['met'] else 'no'} |"
        )
    return lines + [""]


PEER_MARKERS = {"PyTorch fp32 teacher": ("X", "black"), "ORT int8 teacher": ("P", "tab:red")}


def reference_markers(task: str, runs: dict) -> list[tuple[int, str, float, float]]:
    """`(panel, label, x, score)` of each reference marker of a task's plots: panel 0 is
    latency (batch-32 ms), panel 1 size (MB). The peers (`peer_points`) where measured;
    else the PyTorch teacher's time from the teacher's own latency.json, at the
    teacher's mean score (it has no size measurement)."""
    points = peer_points(task, runs)
    if points:
        return [
            marker
            for p in points
            for marker in ((0, p["label"], p["ms"]["b32"], p["score"]),
                           (1, p["label"], p["bytes"] / 1e6, p["score"]))
        ]  # fmt: skip
    teacher = runs.get(TEACHER)
    if not teacher or not teacher[0].get("latency"):
        return []
    score = float(np.mean([100 * main_score(task, r["metrics"]) for r in teacher]))
    return [(0, "PyTorch fp32 teacher", teacher[0]["latency"]["b32"]["torch_teacher_ms"], score)]


def plot(collected: dict, cells: list[Cell], path: Path) -> None:
    """Per task: score vs measured batch-32 latency and score vs shipped bytes; one
    marker per family, mean over seeds; the seed-0 teacher in PyTorch fp32 and ONNX
    Runtime int8 as reference points (`reference_markers`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t, runs in collected.items() if runs]
    if not tasks:
        return
    families = sorted({c.family for c in cells})
    markers = dict(zip(families, "osD^v<>ph*", strict=False))
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.6 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        runs = collected[task]
        for cell in cells:
            results = runs.get(cell.name)
            if not results:
                continue
            score = float(np.mean([100 * main_score(task, r["metrics"]) for r in results]))
            latency = results[0].get("latency")
            kw = dict(marker=markers[cell.family], label=cell.family)
            if latency:
                axes[row, 0].scatter(latency["b32"]["ms"], score, **kw)
                axes[row, 0].annotate(cell.name, (latency["b32"]["ms"], score), fontsize=6)
            size = shipped_bytes(results[0])
            if size:
                axes[row, 1].scatter(size / 1e6, score, **kw)
                axes[row, 1].annotate(cell.name, (size / 1e6, score), fontsize=6)
        for panel, label, x, score in reference_markers(task, runs):
            marker, color = PEER_MARKERS[label]
            axes[row, panel].scatter(x, score, marker=marker, color=color, s=60, label=label)
        if not peer_points(task, runs):
            axes[row, 0].text(0.01, 0.01, "ONNX Runtime int8 peer: not measured", fontsize=6,
                              transform=axes[row, 0].transAxes)  # fmt: skip
        axes[row, 0].set_xlabel("measured latency, batch 32, seq 128 (ms)")
        axes[row, 1].set_xlabel("shipped size (MB)")
        for ax in axes[row]:
            ax.set_ylabel(f"{task} {get_task(task).main_metric} (points)")
            handles, labels = ax.get_legend_handles_labels()
            unique = dict(zip(labels, handles, strict=True))
            ax.legend(unique.values(), unique.keys(), fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
