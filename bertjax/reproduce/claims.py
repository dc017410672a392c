"""The source papers' claims, decided by the seeds' spread.

Each claim compares two quantities measured per seed (a cell's score, or a number
derived from its results, in points: metric x 100). With d the difference of the
means and se its standard error (sqrt(var_a / n_a + var_b / n_b), sample variances),
  ">"              a beats b: held when d - 2 se > 0, not held when d + 2 se < 0
  "not_below"      a >= b - k (k points): held when d + k - 2 se > 0,
                   not held when d + k + 2 se < 0
and inconclusive otherwise, or when either side has fewer than 2 seeds (no spread).
A claim whose cells did not run on a task is skipped there.
"""

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from bertjax.train.metrics import main_score

Values = Callable[[dict], list[float] | None]  # cells' results per seed -> values


def score(cell: str) -> Values:
    """The cell's main metric per seed, in points."""

    def values(runs: dict) -> list[float] | None:
        found = runs.get(cell)
        if not found:
            return None
        return [100 * main_score(r["task"], r["metrics"]) for r in found]

    return values


def best_of(*cells: str) -> Values:
    """Per seed, the best score among `cells` (all must have run)."""

    def values(runs):
        found = [score(cell)(runs) for cell in cells]
        if any(v is None for v in found):
            return None
        n = min(len(v) for v in found)
        return [max(v[i] for v in found) for i in range(n)]

    return values


def share_of_teacher(cell: str) -> Values:
    """Per seed, the cell's score as a percentage of the teachers' mean score."""

    def values(runs):
        ours, teachers = score(cell)(runs), score("teacher")(runs)
        if ours is None or teachers is None:
            return None
        return [100 * v / float(np.mean(teachers)) for v in ours]

    return values


def constant(value: float) -> Values:
    """A fixed bar with no spread of its own (so only a's counts): `value` once per seed
    of the task's most-seeded cell, at least twice."""
    return lambda runs: [value] * max([2, *(len(found) for found in runs.values())])


def exit_score(cell: str, min_speedup: float) -> Values:
    """Per seed, the best score among the cell's early-exit sweep points whose
    layer speed-up (layers / mean exit layer) is at least `min_speedup`."""

    def values(runs):
        found = runs.get(cell)
        if not found:
            return None
        out = []
        for r in found:
            points = [
                100 * main_score(r["task"], p["metrics"])
                for p in r["early_exit"]["sweep"]
                if p["layer_speedup"] >= min_speedup
            ]
            out.append(max(points) if points else math.nan)
        return None if any(math.isnan(v) for v in out) else out

    return values


@dataclasses.dataclass(frozen=True)
class Claim:
    name: str
    source: str
    a: Values
    b: Values
    relation: str  # ">" or "not_below"
    margin: float = 0.0  # points, for "not_below"
    a_label: str = ""
    b_label: str = ""


def decide(claim: Claim, runs: dict) -> dict | None:
    """`{verdict, a, b, d, se, n}` of `claim` on one task's runs, or None if not run."""
    a, b = claim.a(runs), claim.b(runs)
    if a is None or b is None:
        return None
    d = float(np.mean(a) - np.mean(b))
    n = min(len(a), len(b))
    if n < 2:
        return {"verdict": "inconclusive (1 seed)", "a": a, "b": b, "d": d, "se": None, "n": n}
    se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    shift = d if claim.relation == ">" else d + claim.margin
    verdict = "held" if shift - 2 * se > 0 else "not held" if shift + 2 * se < 0 else "inconclusive"
    return {"verdict": verdict, "a": a, "b": b, "d": d, "se": se, "n": n}


def claims(student_layers: int, drop: int) -> list[Claim]:
    """Every claim, for the budget's student depth and layer-drop count."""
    n = f"l{student_layers}"
    return [
        Claim("uniform layer map beats top and bottom maps", "TinyBERT (Jiao et al. 2020)",
              score(f"{n}-tinybert-uniform"), best_of(f"{n}-tinybert-top", f"{n}-tinybert-bottom"),
              ">", a_label="uniform", b_label="best of top, bottom"),
        Claim("EMD layer mapping >= the best fixed map (0.5 point)", "BERT-EMD (Li et al. 2020)",
              score(f"{n}-emd"),
              best_of(f"{n}-tinybert-uniform", f"{n}-tinybert-top", f"{n}-tinybert-bottom"),
              "not_below", 0.5, "EMD", "best TinyBERT map"),
        Claim("dropping the top layers is best", "Poor Man's BERT (Sajjad et al. 2023)",
              score(f"drop{drop}-top"), best_of(f"drop{drop}-bottom", f"drop{drop}-even"), ">",
              a_label="top", b_label="best of bottom, even"),
        Claim("8-bit QAT loses < 1 point", "Q8BERT (Zafrir et al. 2019)",
              score("qat-w8a8"), score("teacher"), "not_below", 1.0, "QAT W8A8", "teacher"),
        Claim("BitFit is competitive (< 2 points below full fine-tuning)",
              "BitFit (Ben Zaken et al. 2022)",
              score("bitfit"), score("teacher"), "not_below", 2.0, "BitFit", "teacher"),
        Claim("movement beats magnitude at 90 % sparsity", "Movement pruning (Sanh et al. 2020)",
              score("movement-90"), score("magnitude-90"), ">", a_label="movement",
              b_label="magnitude"),
        Claim("a distilled student beats the same student trained alone",
              "DistilBERT / KD (Sanh et al. 2019; Hinton et al. 2015)",
              score(f"{n}-kd"), score(f"{n}-alone"), ">", a_label="KD", b_label="alone"),
        Claim("PABEE keeps the score (0.5 point) at >= 1.6x fewer layers",
              "PABEE (Zhou et al. 2020)",
              exit_score("early-exit-pabee", 1.6), score("teacher"), "not_below", 0.5,
              "PABEE, best point >= 1.6x", "teacher"),
        Claim("DeeBERT saves 40 % of the layers losing < 1 point", "DeeBERT (Xin et al. 2020)",
              exit_score("early-exit-deebert", 1 / 0.6), score("teacher"), "not_below", 1.0,
              "DeeBERT, best point >= 1.67x", "teacher"),
        Claim("mean-pooled exit heads save 40 % of the layers losing < 1 point",
              "bertjax (DeeBERT with token-mean exit heads)",
              exit_score("early-exit-deebert-mean", 1 / 0.6), score("teacher"), "not_below",
              1.0, "DeeBERT mean-pooled, best point >= 1.67x", "teacher"),
        Claim("the stacked student keeps > 97 % of the teacher's score (its speed: the "
              "table's batch-32 column, the goal 8x)", "bertjax north star",
              share_of_teacher(f"{n}-kd-h5-f5-int8"), constant(97.0), ">",
              a_label="% of teacher", b_label="97 %"),
        Claim("logit KD while pruning keeps more than pruning alone", "bertjax (stack)",
              score(f"{n}-kd-h5-f5-kd"), score(f"{n}-kd-h5-f5"), ">", a_label="pruned with KD",
              b_label="pruned alone"),
        Claim("the stack pruned with KD keeps > 97 % of the teacher's score",
              "bertjax north star (KD while pruning)",
              share_of_teacher(f"{n}-kd-h5-f5-kd-int8"), constant(97.0), ">",
              a_label="% of teacher", b_label="97 %"),
        Claim(f"the {student_layers + 1}-layer stack pruned with KD keeps > 97 % of the "
              "teacher's score", "bertjax north star (one layer deeper)",
              share_of_teacher(f"l{student_layers + 1}-kd-h5-f5-kd-int8"), constant(97.0), ">",
              a_label="% of teacher", b_label="97 %"),
        Claim("the KD student in int8 keeps > 97 % of the teacher's score",
              "bertjax north star (no pruning)",
              share_of_teacher(f"{n}-kd-int8"), constant(97.0), ">",
              a_label="% of teacher", b_label="97 %"),
        Claim("the teacher pruned with KD (every layer kept) in int8 keeps > 97 % of its "
              "score", "bertjax north star (no layer removed)",
              share_of_teacher("h5-f5-kd-int8"), constant(97.0), ">",
              a_label="% of teacher", b_label="97 %"),
        Claim("the same pruned for the teacher's epochs keeps > 97 % of its score",
              "bertjax north star (no layer removed, longer pruning)",
              share_of_teacher("h5-f5-kd-long-int8"), constant(97.0), ">",
              a_label="% of teacher", b_label="97 %"),
    ]  # fmt: skip
