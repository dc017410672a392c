"""The reproduction's outputs: per-task tables (mean ± std over seeds), the claims
table, and plots (score vs measured latency, score vs shipped bytes)."""

import json
import math
from pathlib import Path

import numpy as np

from bertjax.data.tasks import get_task
from bertjax.report import shipped_bytes
from bertjax.reproduce import claims as claims_lib
from bertjax.reproduce.cells import workdir
from bertjax.reproduce.grid import TEACHER, Cell
from bertjax.train.metrics import main_score


def collect(runs: Path, tasks, cells: list[Cell], seeds: int) -> dict:
    """`{task: {cell: [results per finished seed]}}`; seed 0's results carry its
    `latency` (latency.json) when measured."""
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
                results = json.loads(path.read_text())
                latency = directory / "latency.json"
                if latency.exists():
                    results["latency"] = json.loads(latency.read_text())
                per_seed.append(results)
            if per_seed:
                found[cell.name] = per_seed
        out[task] = found
    return out


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} ({len(values)})"


def _latency(results: list[dict], batch: str) -> str:
    latency = results[0].get("latency")
    if not latency:
        return "-"
    entry = latency[batch]
    return f"{entry['ms']:.1f} ({entry['speedup_vs_torch_teacher']:.2f}x)"


def _mean_field(results: list[dict], field: str) -> str:
    values = [r[field] for r in results if isinstance(r.get(field), int | float)]
    return f"{np.mean(values):.3f}" if values else "-"


def task_table(task: str, runs: dict, cells: list[Cell]) -> list[str]:
    """Markdown lines for one task: the teacher row first, then every cell that ran."""
    metric = get_task(task).main_metric
    teacher = [100 * main_score(task, r["metrics"]) for r in runs.get(TEACHER, [])]
    lines = [
        f"### {task} ({metric}, points)",
        "",
        "| method | family | score (mean ± std, seeds) | % of teacher | params | shipped MB | "
        "b1 ms (x PyTorch teacher) | b32 ms (x PyTorch teacher) | label loyalty | prob. loyalty |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
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
            f"{_latency(results, 'b1')} | {_latency(results, 'b32')} | "
            f"{_mean_field(results, 'label_loyalty')} | "
            f"{_mean_field(results, 'probability_loyalty')} |"
        )
    return lines + [""]


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


def plot(collected: dict, cells: list[Cell], path: Path) -> None:
    """Per task: score vs measured batch-32 latency (the PyTorch teacher as a reference
    point) and score vs shipped bytes; one marker per family, mean over seeds."""
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
        teacher = runs.get(TEACHER)
        if teacher and teacher[0].get("latency"):
            score = float(np.mean([100 * main_score(task, r["metrics"]) for r in teacher]))
            torch_ms = teacher[0]["latency"]["b32"]["torch_teacher_ms"]
            axes[row, 0].scatter(torch_ms, score, marker="X", color="black", s=60,
                                 label="PyTorch fp32 teacher")  # fmt: skip
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
