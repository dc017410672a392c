"""Collects the `results.json` of many runs into one table and one plot.

`python -m bertjax.report RUNS_DIR [--reference PATTERN] [--out PREFIX]`
walks RUNS_DIR for every `results.json` (the schema a finished run writes,
see DESIGN.md), and writes

- `RUNS_DIR/report.md`: one markdown row per run (task, model, method, the
  task's official main metric, % of the task's reference run, parameters,
  non-zero parameters, size, latency), also printed to stdout;
- `RUNS_DIR/report.png`: accuracy against size (log MB), one marker per task.

The reference of a task is the run that compression is measured against:
the run whose directory matches `--reference` (a regex, e.g. `teacher`), or
an existing directory / `results.json` given as `--reference`; otherwise the
`finetune` run with the most parameters. Optional fields that a run lacks
are shown as '-'. `gather`, `add_reference`, `render_markdown` and
`plot` are importable for notebooks.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bertjax.data.tasks import get_task
from bertjax.train.metrics import main_score

MISSING = "-"

COLUMNS = (
    "run",
    "task",
    "model",
    "method",
    "main metric",
    "% of ref",
    "params",
    "nonzero params",
    "size (MB)",
    "quantized (MB)",
    "label loyalty",
    "prob. loyalty",
    "teacher r",
    "latency (ms)",
)


class ReportError(Exception):
    """Raised when there is nothing to report or a reference cannot be used."""


def _task_name(name: Any) -> str:
    """Canonical task name ('SST-2' -> 'sst2'); unknown names are kept as given."""
    if not isinstance(name, str) or not name:
        return MISSING
    try:
        return get_task(name).name
    except ValueError:
        return name


def _main_metric(task: str, metrics: Any) -> tuple[str, float | None]:
    """Returns (official main metric name, its value) or (name or '-', None)."""
    if not isinstance(metrics, dict) or task == MISSING:
        return MISSING, None
    try:
        name = get_task(task).main_metric
    except ValueError:
        name = "accuracy"
    if name not in metrics:
        return name, None
    try:
        value = float(main_score(task, metrics))
    except (KeyError, TypeError, ValueError):
        return name, None
    return name, value if math.isfinite(value) else None


def _load(path: Path, run: str) -> dict[str, Any]:
    """Reads one results.json into a row: its fields plus run, task, main metric."""
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    if not isinstance(results, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(results).__name__}")
    row = dict(results)
    row["run"] = run
    row["path"] = str(path)
    row["task"] = _task_name(results.get("task"))
    row["main_metric"], row["main"] = _main_metric(row["task"], results.get("metrics"))
    return row


def gather(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Loads every `results.json` under `runs_dir`, sorted by (task, run dir).

    Each row is the file's dict plus `run` (its directory relative to
    `runs_dir`, '.' for the top), `path`, the canonical `task`, and
    `main_metric` / `main` (the task's official main metric name and value,
    None when absent). A file that is not valid JSON is reported on stderr and
    skipped, so that one half-written run does not hide the others.
    """
    runs_dir = Path(runs_dir)
    rows = []
    for path in sorted(runs_dir.rglob("results.json")):
        run = path.parent.relative_to(runs_dir).as_posix()
        try:
            rows.append(_load(path, run))
        except (json.JSONDecodeError, UnicodeDecodeError, ReportError) as error:
            print(f"warning: skipping {path}: {error}", file=sys.stderr)
    return sorted(rows, key=lambda row: (row["task"], row["run"]))


def _as_number(value: Any) -> float | None:
    """The value as a float when it is a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _default_reference(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The 'finetune' run with the most parameters (ties: first run dir)."""
    candidates = [
        row for row in rows if row.get("method") == "finetune" and row["main"] is not None
    ]
    if not candidates:
        return None
    # max() keeps the first of equal keys, and rows are sorted by run dir.
    return max(candidates, key=lambda row: _as_number(row.get("params")) or 0.0)


def _external_references(reference: str) -> list[dict[str, Any]] | None:
    """Rows loaded from `reference` when it is an existing dir or results.json; a dir of
    runs (e.g. runs/teacher with one run per task) gives one reference per task."""
    path = Path(reference)
    if path.is_dir() and not (path / "results.json").is_file():
        children = sorted(path.glob("*/results.json"))
        if children:
            return [_load(child, str(child.parent)) for child in children]
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        return None
    return [_load(path, str(path.parent))]


def add_reference(
    rows: list[dict[str, Any]], reference: str | Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Adds `reference_run`, `reference_main` and `percent` (% of reference) to rows.

    `reference`: one or more patterns. A pattern that names an existing
    directory or results.json file is loaded as the reference for its task
    (a directory of runs, one reference per task);
    any other pattern is a regex searched in each run dir, and the matching
    run of a task (the one with most parameters if several) is its
    reference. Tasks that no pattern covers fall back to the `finetune` run
    with the most parameters. Returns new row dicts; `rows` is not changed.
    """
    patterns = [reference] if isinstance(reference, str) else list(reference or ())
    rows = [dict(row) for row in rows]
    chosen: dict[str, dict[str, Any]] = {}
    for pattern in patterns:
        external = _external_references(pattern)
        if external is not None:
            for row in external:
                chosen.setdefault(row["task"], row)
            continue
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise ReportError(f"--reference {pattern!r} is not a valid regex: {error}") from None
        matches = [row for row in rows if regex.search(row["run"]) and row["main"] is not None]
        for task in sorted({row["task"] for row in matches}):
            in_task = [row for row in matches if row["task"] == task]
            best = max(in_task, key=lambda row: _as_number(row.get("params")) or 0.0)
            chosen.setdefault(task, best)
    for task in {row["task"] for row in rows}:
        if task not in chosen:
            found = _default_reference([row for row in rows if row["task"] == task])
            if found is not None:
                chosen[task] = found
    for row in rows:
        ref = chosen.get(row["task"])
        row["reference_run"] = ref["run"] if ref else None
        row["reference_main"] = ref["main"] if ref else None
        row["percent"] = None
        if ref and row["main"] is not None and ref["main"] is not None and ref["main"] > 0:
            row["percent"] = 100.0 * row["main"] / ref["main"]
    return rows


def _count(value: Any) -> str:
    """Parameter counts in millions ('22.71M'), '-' when absent."""
    number = _as_number(value)
    return MISSING if number is None else f"{number / 1e6:.2f}M"


def _megabytes(value: Any) -> str:
    """Bytes as decimal megabytes ('90.87'), '-' when absent."""
    number = _as_number(value)
    return MISSING if number is None else f"{number / 1e6:.2f}"


def _fraction(value: Any) -> str:
    """A share in [0, 1] to 3 decimals, '-' when absent."""
    number = _as_number(value)
    return MISSING if number is None else f"{number:.3f}"


def _latency(value: Any) -> str:
    """A latency number, or a dict of named latencies ('b1_s128=3.10, ...')."""
    number = _as_number(value)
    if number is not None:
        return f"{number:.2f}"
    if isinstance(value, dict) and value:
        parts = []
        for key, item in value.items():
            item_number = _as_number(item)
            parts.append(f"{key}={item_number:.2f}" if item_number is not None else f"{key}={item}")
        return ", ".join(parts)
    return MISSING


def _cell(value: Any) -> str:
    """A table cell; '|' would split the markdown cell, so it is escaped."""
    text = MISSING if value is None or value == "" else str(value)
    return text.replace("|", "\\|")


def table_row(row: dict[str, Any]) -> list[str]:
    """The cells of one run's table row, in `COLUMNS` order."""
    main = f"{row['main_metric']} {row['main']:.4f}" if row.get("main") is not None else MISSING
    percent = row.get("percent")
    run = row["run"] + (" (ref)" if row.get("reference_run") == row["run"] else "")
    return [
        _cell(cell)
        for cell in (
            run,
            row.get("task"),
            row.get("model"),
            row.get("method"),
            main,
            MISSING if percent is None else f"{percent:.1f}",
            _count(row.get("params")),
            _count(row.get("nonzero_params")),
            _megabytes(row.get("bytes")),
            _megabytes(row.get("quantized_bytes")),
            _fraction(row.get("label_loyalty")),
            _fraction(row.get("probability_loyalty")),
            _fraction(row.get("teacher_pearson")),
            _latency(row.get("latency_ms")),
        )
    ]


def render_markdown(
    rows: list[dict[str, Any]], reference: str | Sequence[str] | None = None
) -> str:
    """A markdown table of `rows` (from `gather`), % computed against `reference`."""
    rows = add_reference(rows, reference)
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(table_row(row)) + " |" for row in rows]
    references = sorted({(row["task"], row["reference_run"]) for row in rows})
    notes = [f"{task}: {run}" for task, run in references if run is not None]
    lines += ["", "Reference per task: " + ("; ".join(notes) if notes else "none") + "."]
    return "\n".join(lines) + "\n"


def plot(
    rows: list[dict[str, Any]], path: str | Path, reference: str | Sequence[str] | None = None
) -> Path:
    """Saves accuracy against size (MB, log x) as a PNG, one marker shape per task.

    y is % of the task's reference when every plotted run has one, else the
    raw main metric. Runs without `bytes` or a main metric are left out.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = add_reference(rows, reference)
    points = [row for row in rows if _as_number(row.get("bytes")) and row["main"] is not None]
    use_percent = bool(points) and all(row["percent"] is not None for row in points)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    markers = "osD^v<>pP*Xh"
    for index, task in enumerate(sorted({row["task"] for row in points})):
        in_task = [row for row in points if row["task"] == task]
        xs = [row["bytes"] / 1e6 for row in in_task]
        ys = [row["percent"] if use_percent else row["main"] for row in in_task]
        axes.scatter(xs, ys, marker=markers[index % len(markers)], label=task, s=40)
        for x, y, row in zip(xs, ys, in_task, strict=True):
            axes.annotate(
                row["run"].rsplit("/", 1)[-1],
                (x, y),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    sizes = [row["bytes"] / 1e6 for row in points] or [1.0]
    log_scale = max(sizes) >= 2 * min(sizes)  # a log axis over a narrow range is unreadable
    if log_scale:
        axes.set_xscale("log")
        # Plain numbers (30, 40, 60) rather than 3x10^1.
        axes.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:.1f}"))
        axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    else:
        axes.ticklabel_format(axis="x", style="plain", useOffset=False)
    axes.set_xlabel("model size (MB, log scale)" if log_scale else "model size (MB)")
    axes.set_ylabel("% of reference" if use_percent else "main metric")
    if use_percent:
        axes.axhline(100.0, color="gray", linewidth=0.8, linestyle="--")
    if points:
        axes.legend(title="task", fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_report(
    runs_dir: str | Path,
    reference: str | Sequence[str] | None = None,
    out: str | Path | None = None,
) -> tuple[str, Path, Path]:
    """Writes `<out>.md` and `<out>.png` (default RUNS_DIR/report); returns (markdown, paths)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ReportError(f"{runs_dir} is not a directory")
    rows = gather(runs_dir)
    if not rows:
        raise ReportError(f"no results.json found under {runs_dir}")
    prefix = Path(out) if out is not None else runs_dir / "report"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(rows, reference)
    markdown_path = prefix.with_name(prefix.name + ".md")
    markdown_path.write_text(markdown, encoding="utf-8")
    png_path = plot(rows, prefix.with_name(prefix.name + ".png"), reference)
    return markdown, markdown_path, png_path


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; errors are one line on stderr and exit status 1."""
    parser = argparse.ArgumentParser(
        prog="python -m bertjax.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("runs_dir", help="directory searched recursively for results.json")
    parser.add_argument(
        "--reference",
        action="append",
        help="regex over run dirs, or a run dir / results.json; repeat for several tasks",
    )
    parser.add_argument("--out", help="output prefix (default RUNS_DIR/report)")
    args = parser.parse_args(argv)
    try:
        markdown, markdown_path, png_path = write_report(args.runs_dir, args.reference, args.out)
    except (ReportError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(markdown, end="")
    print(f"wrote {markdown_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
