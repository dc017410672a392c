"""Collects the `results.json` of many runs into one table and one plot.

`python -m bertjax.report RUNS_DIR [--reference PATTERN] [--out PREFIX]`
walks RUNS_DIR for every `results.json` (the schema a finished run writes,
see DESIGN.md), and writes

- `RUNS_DIR/report.md`: one markdown row per run (task, model, method, the
  task's official main metric, % of the task's reference run, parameters,
  non-zero parameters, sizes, latency), also printed to stdout; smoke runs
  (tiny data, `"smoke": true`) are marked `(smoke)`;
- `RUNS_DIR/report.png`: accuracy against the size the method would ship
  (`shipped_bytes`: sparse, quantized or pruned, as stored), and against
  measured latency where runs have `latency_ms`; one marker per method family,
  the reference runs ringed, smoke runs hollow.

The reference of a task is the run that compression is measured against:
the run whose directory matches `--reference` (a regex, e.g. `teacher`), or
an existing directory / `results.json` given as `--reference`; otherwise the
`finetune` run with the most parameters (a smoke run only when there is no other).
Optional fields that a run lacks
are shown as '-'. `gather`, `add_reference`, `render_markdown`, `shipped_bytes`
and `plot` are importable for notebooks.
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
    "shipped (MB)",
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
    return max(
        candidates,
        key=lambda row: (not row.get("smoke"), _as_number(row.get("params")) or 0.0),
    )


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


# The sizes a run may report: dense or stored (`bytes`: int8 artifacts, physically pruned
# models), kept values + bitmap (`sparse_bytes`), weights at their bit width
# (`quantized_bytes`, fake-quant runs).
SIZE_FIELDS = ("bytes", "sparse_bytes", "quantized_bytes")


def shipped_bytes(row: dict[str, Any]) -> float | None:
    """The size on disk of what the run's method would ship: the smallest size it reports
    (a 70 %-sparse run ships its `sparse_bytes`, a QAT run its `quantized_bytes`)."""
    sizes = [_as_number(row.get(field)) for field in SIZE_FIELDS]
    sizes = [size for size in sizes if size]
    return min(sizes) if sizes else None


# results.json `method` prefixes -> the family a plot marker stands for.
FAMILIES = (
    ("finetune", "fine-tuning"),
    ("prune_structured", "structured pruning"),
    ("prune", "unstructured pruning"),
    ("layer_drop", "layer dropping"),
    ("quant", "quantization"),
    ("distill", "distillation"),
    ("theseus", "distillation"),
    ("bitfit", "BitFit"),
    ("lowrank", "low-rank factorization"),
    ("ladabert", "LadaBERT"),
)


def method_family(method: Any) -> str:
    """The family of a results.json `method` ('prune_magnitude' -> 'unstructured pruning');
    a composition ('prune_magnitude+bitfit') joins its parts' families with '+'."""
    if not isinstance(method, str) or not method:
        return "other"
    families = []
    for part in method.split("+"):
        family = next((name for prefix, name in FAMILIES if part.startswith(prefix)), part)
        if family not in families:
            families.append(family)
    return " + ".join(families)


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
    run += " (smoke)" if row.get("smoke") else ""
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
            _megabytes(shipped_bytes(row)),
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


def latency_key(rows: list[dict[str, Any]]) -> str | None:
    """The `latency_ms` entry the plot shows: the name most runs have ('b1_s128'); None
    when runs give plain numbers (or no latency)."""
    counts: dict[str | None, int] = {}
    for row in rows:
        value = row.get("latency_ms")
        names = list(value) if isinstance(value, dict) else [None] * (_as_number(value) is not None)
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return max(counts, key=lambda name: counts[name]) if counts else None


def latency_of(row: dict[str, Any], key: str | None) -> float | None:
    """A run's latency in ms: `latency_ms[key]`, or `latency_ms` itself when a number."""
    value = row.get("latency_ms")
    return _as_number(value.get(key) if isinstance(value, dict) else value)


# Label offsets (points) tried in order around a marker: right, left, then further out.
LABEL_OFFSETS = tuple((dx, dy) for dy in (2, -10, 12, -20, 22, -30, 32, -40) for dx in (5, "left"))


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether boxes (x0, y0, x1, y1) intersect."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_offsets(
    anchors: list[tuple[float, float]], sizes: list[tuple[float, float]], marker: float = 5.0
) -> list[tuple[float, float]]:
    """Offsets (points) for labels of `sizes` (w, h) at `anchors` (points) such that no
    label covers an earlier label or any marker (a square of half-width `marker`), tried
    in `LABEL_OFFSETS` order; the first offset where nothing is free."""
    taken = [(x - marker, y - marker, x + marker, y + marker) for x, y in anchors]
    offsets = []
    for (x, y), (width, height) in zip(anchors, sizes, strict=True):
        chosen = None
        for dx, dy in LABEL_OFFSETS:
            dx = -5 - width if dx == "left" else dx
            box = (x + dx, y + dy, x + dx + width, y + dy + height)
            if not any(_overlap(box, other) for other in taken):
                chosen = (dx, dy, box)
                break
        if chosen is None:
            chosen = (5, 2, (x + 5, y + 2, x + 5 + width, y + 2 + height))
        taken.append(chosen[2])
        offsets.append(chosen[:2])
    return offsets


def _labels(points: list[dict[str, Any]]) -> list[str]:
    """Short point labels: the run's last path part; the whole path where that repeats or
    where runs of several tasks share the plot."""
    last = [row["run"].rsplit("/", 1)[-1] for row in points]
    several_tasks = len({row["task"] for row in points}) > 1
    labels = []
    for name, row in zip(last, points, strict=True):
        label = name if last.count(name) == 1 and not several_tasks else row["run"]
        labels.append(label + (" (ref)" if row.get("reference_run") == row["run"] else ""))
    return labels


MARKERS = "osD^vP*Xph<>"
LABEL_FONT = 7  # points


def plot_points(
    rows: list[dict[str, Any]], reference: str | Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], bool, str | None]:
    """What `plot` draws: `(points, percent, latency key)`.

    One point per run with a main metric and a size: `run`, `task`, `main_metric`,
    `size_mb` (its `shipped_bytes` / 1e6), `latency_ms` (or None), `y`, `label`,
    `family`, `reference` and `smoke`. y is % of the task's reference when every
    point has one and some run is not its own reference (a lone run is not
    "100 %"); else the raw main metric (`percent` False).
    """
    rows = add_reference(rows, reference)
    rows = [row for row in rows if shipped_bytes(row) and row["main"] is not None]
    percent = (
        bool(rows)
        and all(row["percent"] is not None for row in rows)
        and any(row["reference_run"] != row["run"] for row in rows)
    )
    key = latency_key(rows)
    points = [
        {
            "run": row["run"],
            "task": row["task"],
            "main_metric": row["main_metric"],
            "size_mb": shipped_bytes(row) / 1e6,
            "latency_ms": latency_of(row, key),
            "y": row["percent"] if percent else row["main"],
            "label": label,
            "family": method_family(row.get("method")),
            "reference": row["reference_run"] == row["run"],
            "smoke": bool(row.get("smoke")),
        }
        for row, label in zip(rows, _labels(rows), strict=True)
    ]
    return points, percent, key


def plot(
    rows: list[dict[str, Any]], path: str | Path, reference: str | Sequence[str] | None = None
) -> Path:
    """Saves `plot_points` as a PNG: accuracy against shipped size (MB) and, where runs
    have `latency_ms`, against latency (ms); one marker and legend entry per method
    family, reference runs ringed, smoke runs hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.lines
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    points, use_percent, key = plot_points(rows, reference)
    panels = [("size", [point["size_mb"] for point in points])]
    if any(point["latency_ms"] is not None for point in points):
        panels.append(("latency", [point["latency_ms"] for point in points]))
    figure, axes_list = plt.subplots(
        1, len(panels), figsize=(6.5 * len(panels), 4.8), sharey=True, squeeze=False
    )
    # Families in FAMILIES' order (fine-tuning first), then compositions and others.
    known = list(dict.fromkeys(name for _, name in FAMILIES))
    present = {point["family"] for point in points}
    families = [f for f in known if f in present] + sorted(present - set(known))
    colors = plt.get_cmap("tab10")
    style = {
        family: (MARKERS[i % len(MARKERS)], colors(i % 10)) for i, family in enumerate(families)
    }
    ys = [point["y"] for point in points]
    labels = [point["label"] for point in points]
    for axes, (panel, xs) in zip(axes_list[0], panels, strict=True):
        shown = [i for i, x in enumerate(xs) if x is not None]
        for i in shown:
            point = points[i]
            marker, color = style[point["family"]]
            is_reference = point["reference"]
            axes.scatter(
                [xs[i]],
                [ys[i]],
                marker=marker,
                s=90 if is_reference else 45,
                facecolors="none" if point["smoke"] else [color],
                edgecolors="black" if is_reference else [color],
                linewidths=1.8 if is_reference else 1.2,
                zorder=3,
            )
        values = [xs[i] for i in shown] or [1.0]
        log_scale = max(values) >= 2 * min(values)  # a log axis over a narrow range is unreadable
        if log_scale:
            axes.set_xscale("log")
            # Plain numbers at 1-2-3-5-7 steps (20, 30, 50, 70, 100) rather than 10^1, 10^2.
            axes.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 3, 5, 7)))
            axes.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:g}"))
            axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        else:
            axes.ticklabel_format(axis="x", style="plain", useOffset=False)
        scale = " (log scale)" if log_scale else ""
        if panel == "size":
            axes.set_xlabel(f"size shipped, MB{scale}: sparse, quantized or pruned as stored")
        else:
            axes.set_xlabel(f"latency, ms{scale}" + (f" ({key})" if key else ""))
        if use_percent:
            axes.axhline(100.0, color="gray", linewidth=0.8, linestyle="--")
        axes.grid(True, which="both", alpha=0.3)
        axes.margins(0.15)
        # Labels placed in points once the axes' limits are final, clear of each other.
        figure.canvas.draw()
        to_points = 72.0 / figure.dpi
        anchors = [tuple(axes.transData.transform((xs[i], ys[i])) * to_points) for i in shown]
        sizes = [(0.55 * LABEL_FONT * len(labels[i]), LABEL_FONT) for i in shown]
        for i, (dx, dy) in zip(shown, label_offsets(anchors, sizes), strict=True):
            far = abs(dy) > 10
            axes.annotate(
                labels[i],
                (xs[i], ys[i]),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=LABEL_FONT,
                arrowprops=dict(arrowstyle="-", color="gray", linewidth=0.5) if far else None,
            )
    metric = points[0]["main_metric"] if len({p["main_metric"] for p in points}) == 1 else None
    axes_list[0][0].set_ylabel(
        "% of reference" if use_percent else f"main metric{f' ({metric})' if metric else ''}"
    )
    handles = [
        matplotlib.lines.Line2D(
            [], [], marker=marker, color=color, linestyle="", markersize=7, label=family
        )
        for family, (marker, color) in style.items()
    ]
    if any(point["reference"] for point in points):
        handles.append(
            matplotlib.lines.Line2D(
                [],
                [],
                marker="o",
                markerfacecolor="none",
                markeredgecolor="black",
                markeredgewidth=1.8,
                markersize=9,
                linestyle="",
                label="reference run",
            )
        )
    if any(point["smoke"] for point in points):
        handles.append(
            matplotlib.lines.Line2D(
                [],
                [],
                marker="o",
                markerfacecolor="none",
                markeredgecolor="gray",
                linestyle="",
                markersize=7,
                label="smoke run (not a result)",
            )
        )
    if handles:  # beside the last panel, where it covers no point
        axes_list[0][-1].legend(
            handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0)
        )
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120, bbox_inches="tight")
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
