"""The operator-order study's table and plot (issue 16 item 5; runs: operator_order.sh).

Reads RUNS_DIR/<name>/results.json for the five single operators (`prune`, `int8`, `kd`,
`drop`, `lowrank`) and every ordered pair `A-B` (B applied to A's export; `int8-B` is B
trained under W8A8 fake-quant, then stored in int8). A run without results.json is
reported with the last error line of RUNS_DIR/<name>.log (or as not run).

Per pair: (a) commutativity, |score(A->B) - score(B->A)|; (b) cumulativity, the observed
score of each order minus the additive prediction score(A) + score(B) - score(teacher)
(each operator's drop from the teacher, summed). Scores are the task's main metric.

  python benchmarks/operator_order.py runs/oporder/mrpc \
      --teacher runs/teacher/mrpc/export --out benchmarks/operator_order_mrpc

writes OUT.md (printed too) and OUT.png (default OUT: RUNS_DIR/operator_order).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

SINGLES = ("prune", "int8", "kd", "drop", "lowrank")
LABELS = {
    "prune": "structured pruning (heads, FFN -50 %)",
    "int8": "int8 PTQ (stored, dynamic scales)",
    "kd": "logit KD into half the layers",
    "drop": "drop the top half of the layers",
    "lowrank": "low-rank SVD (ratio 0.5)",
}
# Unordered pairs, (A, B): A->B is run `A-B`, B->A is run `B-A`.
PAIRS = (
    ("kd", "drop"),
    ("prune", "drop"),
    ("drop", "lowrank"),
    ("prune", "kd"),
    ("kd", "lowrank"),
    ("prune", "lowrank"),
    ("prune", "int8"),
    ("kd", "int8"),
    ("drop", "int8"),
    ("lowrank", "int8"),
)


def score(results: dict[str, Any] | None, metric: str | None = None) -> float | None:
    """`metric` (default: the main metric) of one results.json dict; None for a missing run."""
    if not results:
        return None
    return float(results["metrics"][metric or results["main_metric"]])


def additive_prediction(teacher: float, score_a: float | None, score_b: float | None):
    """The score of A and B together if their drops from the teacher add up:
    teacher - (teacher - a) - (teacher - b) = a + b - teacher. None if either is missing."""
    if score_a is None or score_b is None:
        return None
    return score_a + score_b - teacher


def difference(first: float | None, second: float | None) -> float | None:
    """`first - second`, None if either is missing."""
    if first is None or second is None:
        return None
    return first - second


def commutativity(score_ab: float | None, score_ba: float | None) -> float | None:
    """|score(A->B) - score(B->A)|: 0 when the order does not matter."""
    gap = difference(score_ab, score_ba)
    return None if gap is None else abs(gap)


def failure_reason(log_text: str) -> str:
    """The last error line of a run's log: `bertjax: error: ...`, else a traceback's last
    `SomethingError: ...` line, else its last non-empty line."""
    lines = [line.strip() for line in re.split(r"[\r\n]+", log_text) if line.strip()]
    for line in reversed(lines):
        if line.startswith("bertjax: error"):
            return line
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b", line):
            return line
    return lines[-1] if lines else "empty log"


def pair_row(
    a: str, b: str, runs: dict[str, dict | None], teacher: float, metric: str | None = None
) -> dict[str, Any]:
    """One pair's numbers in `metric` from `runs` (name -> results dict or None)."""
    ab, ba = runs.get(f"{a}-{b}"), runs.get(f"{b}-{a}")
    score_ab, score_ba = score(ab, metric), score(ba, metric)
    predicted = additive_prediction(teacher, score(runs.get(a), metric), score(runs.get(b), metric))
    return {
        "a": a,
        "b": b,
        "ab": score_ab,
        "ba": score_ba,
        "order_gap": difference(score_ab, score_ba),
        "commutativity": commutativity(score_ab, score_ba),
        "predicted": predicted,
        "ab_excess": difference(score_ab, predicted),
        "ba_excess": difference(score_ba, predicted),
        "ab_bytes": (ab or {}).get("bytes"),
        "ba_bytes": (ba or {}).get("bytes"),
    }


def single_row(
    name: str, results: dict | None, teacher: float, metric: str | None = None
) -> dict[str, Any]:
    """One single operator's numbers: score, % of the teacher, loyalty, params, bytes."""
    value = score(results, metric)
    results = results or {}
    return {
        "name": name,
        "score": value,
        "percent": None if value is None else 100 * value / teacher,
        "loyalty": results.get("label_loyalty"),
        "params": results.get("params"),
        "bytes": results.get("bytes"),
    }


def _num(value, digits=4, signed=False):
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _mb(value):
    return "—" if value is None else f"{value / 1e6:.1f}"


def _cells(rows: list[dict], field: str, **kw) -> str:
    """One cell: `field` of the same row under each metric, joined by " / "."""
    return " / ".join(_num(row[field], **kw) for row in rows)


def markdown(
    singles: dict[str, list[dict]],
    pairs: dict[str, list[dict]],
    teacher: dict[str, float],
    failures: dict[str, str],
    notes: list[str] = (),
) -> str:
    """The table, every score as "metric1 / metric2 ...": single operators (best first by
    the first metric), then pairs, then notes and the runs without results."""
    metrics = list(singles)
    names = " / ".join(metrics)
    first = metrics[0]
    out = [
        f"Teacher: {names} {' / '.join(f'{teacher[m]:.4f}' for m in metrics)}, "
        f"{teacher['params'] / 1e6:.1f} M params, {_mb(teacher['bytes'])} MB.",
        "",
        f"| operator alone | {names} | % of teacher | label loyalty | params (M) | MB |",
        "|---|---|---|---|---|---|",
    ]
    order = sorted(
        range(len(singles[first])),
        key=lambda i: -(singles[first][i]["score"] or -1.0),
    )
    for i in order:
        rows = [singles[m][i] for m in metrics]
        row = rows[0]
        params = "—" if row["params"] is None else f"{row['params'] / 1e6:.1f}"
        out.append(
            f"| {row['name']}: {LABELS.get(row['name'], '')} | {_cells(rows, 'score')} | "
            f"{_cells(rows, 'percent', digits=1)} | {_num(row['loyalty'])} | {params} | "
            f"{_mb(row['bytes'])} |"
        )
    out += [
        "",
        f"| A, B ({names}) | A→B | B→A | A→B − B→A | additive prediction | A→B − pred. "
        "| B→A − pred. | MB A→B / B→A |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i in range(len(pairs[first])):
        rows = [pairs[m][i] for m in metrics]
        row = rows[0]
        out.append(
            f"| {row['a']}, {row['b']} | {_cells(rows, 'ab')} | {_cells(rows, 'ba')} | "
            f"{_cells(rows, 'order_gap', signed=True)} | {_cells(rows, 'predicted')} | "
            f"{_cells(rows, 'ab_excess', signed=True)} | {_cells(rows, 'ba_excess', signed=True)} "
            f"| {_mb(row['ab_bytes'])} / {_mb(row['ba_bytes'])} |"
        )
    if notes:
        out += ["", *notes]
    if failures:
        out += ["", "Runs without results:", ""]
        out += [f"- `{name}`: {reason}" for name, reason in sorted(failures.items())]
    return "\n".join(out) + "\n"


def plot(
    singles: dict[str, list[dict]],
    pairs: dict[str, list[dict]],
    teacher: dict,
    path: Path,
    floors: dict[str, float] | None = None,
):
    """Left: each operator alone, every metric (one marker each) against MB. Then one panel
    per metric: observed against additive prediction, both orders of a pair joined by a
    line (on the dotted diagonal: additive; the faint ones: ±1 point); `floors` (metric ->
    score, e.g. the majority class's) as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(singles)
    fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(6 * (1 + len(metrics)), 5))
    floors = floors or {}
    left = axes[0]
    for metric, marker in zip(metrics, "os^v", strict=False):
        left.scatter([teacher["bytes"] / 1e6], [teacher[metric]], marker="*", s=150, c="k")
        left.annotate(f"teacher {metric}", (teacher["bytes"] / 1e6, teacher[metric]))
        for i, row in enumerate(singles[metric]):
            if row["score"] is not None and row["bytes"]:
                left.scatter([row["bytes"] / 1e6], [row["score"]], marker=marker, color=f"C{i}")
                left.annotate(f"{row['name']} {metric}", (row["bytes"] / 1e6, row["score"]))
        if metric in floors:
            left.axhline(floors[metric], ls="--", c="grey", lw=0.8)
    left.set_xlabel("exported MB")
    left.set_ylabel(f"dev {' / '.join(metrics)} (dashed: floor)")
    left.set_title("single operators")
    for axis, metric in zip(axes[1:], metrics, strict=True):
        values = []
        for row in pairs[metric]:
            points = [(row["predicted"], row["ab"], "o"), (row["predicted"], row["ba"], "s")]
            points = [p for p in points if p[0] is not None and p[1] is not None]
            if not points:
                continue
            line = axis.plot([p[0] for p in points], [p[1] for p in points], "-", alpha=0.5)
            for x, y, marker in points:
                axis.scatter([x], [y], marker=marker, color=line[0].get_color())
                values += [x, y]
            axis.annotate(f"{row['a']}, {row['b']}", points[0][:2], fontsize=8)
        if values:
            low, high = min(values) - 0.01, max(values) + 0.01
            axis.plot([low, high], [low, high], "k:", label="additive")
            for shift in (0.01, -0.01):
                axis.plot([low, high], [low + shift, high + shift], "k:", alpha=0.25)
            if metric in floors:
                axis.axhline(floors[metric], ls="--", c="grey", lw=0.8, label="floor")
            axis.legend(loc="lower right")
        axis.set_xlabel(f"additive prediction: {metric}(A) + {metric}(B) − teacher")
        axis.set_ylabel(f"observed {metric}: circle A→B, square B→A")
        axis.set_title(f"pairs, {metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def load(runs_dir: Path) -> tuple[dict[str, dict | None], dict[str, str]]:
    """(name -> results dict or None, name -> failure reason) for every run the study has."""
    names = list(SINGLES) + [f"{x}-{y}" for a, b in PAIRS for x, y in ((a, b), (b, a))]
    names += [f"int8-{op}.qat" for op in SINGLES if op != "int8"]
    runs, failures = {}, {}
    for name in names:
        path = runs_dir / name / "results.json"
        runs[name] = json.loads(path.read_text()) if path.is_file() else None
        log = runs_dir / f"{name}.log"
        if runs[name] is None:
            failures[name] = failure_reason(log.read_text()) if log.is_file() else "not run"
    return runs, failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher's export/")
    parser.add_argument("--metrics", nargs="+", help="default: the main metric, accuracy")
    parser.add_argument("--out", type=Path, help="OUT.md and OUT.png")
    parser.add_argument(
        "--floor", nargs="*", default=[], help="METRIC=SCORE lines, e.g. the majority class's"
    )
    args = parser.parse_args(argv)
    teacher_results = json.loads((args.teacher.parent / "results.json").read_text())
    metrics = args.metrics or list(dict.fromkeys([teacher_results["main_metric"], "accuracy"]))
    teacher = {m: score(teacher_results, m) for m in metrics}
    teacher.update(params=teacher_results["params"], bytes=teacher_results["bytes"])
    runs, failures = load(args.runs)
    singles = {m: [single_row(n, runs[n], teacher[m], m) for n in SINGLES] for m in metrics}
    pairs = {m: [pair_row(a, b, runs, teacher[m], m) for a, b in PAIRS] for m in metrics}
    notes = [
        f"`{name}` (B under W8A8 fake-quant, before int8 storage): "
        + " / ".join(_num(score(runs[name], m)) for m in metrics)
        for name in runs
        if name.endswith(".qat") and runs[name]
    ]
    text = markdown(singles, pairs, teacher, failures, notes)
    out = args.out or args.runs / "operator_order"
    out.with_suffix(".md").write_text(text)
    print(text)
    floors = {k: float(v) for k, _, v in (item.partition("=") for item in args.floor)}
    plot(singles, pairs, teacher, out.with_suffix(".png"), floors)


if __name__ == "__main__":
    main()
