"""The operator-order aggregator (benchmarks/operator_order.py) on synthetic results dicts."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location(
        "operator_order", REPO / "benchmarks/operator_order.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


order = _load()


def _results(value, metric="f1", **extra):
    return {"metrics": {metric: value, "accuracy": 0.5}, "main_metric": metric, **extra}


def test_additive_prediction_sums_the_drops_from_the_teacher():
    # drops 0.02 and 0.05 from 0.88 -> 0.81
    assert order.additive_prediction(0.88, 0.86, 0.83) == pytest.approx(0.81)
    assert order.additive_prediction(0.88, None, 0.83) is None


def test_pair_row_commutativity_and_excess_over_the_prediction():
    runs = {
        "prune": _results(0.86),
        "drop": _results(0.83),
        "prune-drop": _results(0.80, bytes=10),
        "drop-prune": _results(0.825),
    }
    row = order.pair_row("prune", "drop", runs, teacher=0.88)
    assert row["ab"] == 0.80 and row["ba"] == 0.825
    assert row["order_gap"] == pytest.approx(-0.025)
    assert row["commutativity"] == pytest.approx(0.025)
    assert row["predicted"] == pytest.approx(0.81)
    assert row["ab_excess"] == pytest.approx(-0.01)
    assert row["ba_excess"] == pytest.approx(0.015)
    assert row["ab_bytes"] == 10 and row["ba_bytes"] is None


def test_a_missing_order_leaves_its_numbers_empty():
    runs = {"kd": _results(0.85), "int8": _results(0.87), "kd-int8": _results(0.84)}
    row = order.pair_row("kd", "int8", runs, teacher=0.88)
    assert row["ba"] is None and row["commutativity"] is None and row["ba_excess"] is None
    assert row["ab_excess"] == pytest.approx(0.84 - 0.84)


def test_failure_reason_is_the_last_error_line():
    log = "bertjax: mrpc ...\nTraceback (most recent call last):\n  File x\nValueError: bad\n"
    assert order.failure_reason(log) == "ValueError: bad"
    assert order.failure_reason("x\nbertjax: error: no such model\n").endswith("no such model")
    assert order.failure_reason("") == "empty log"


def test_load_and_markdown_report_failures(tmp_path):
    (tmp_path / "prune").mkdir()
    (tmp_path / "prune/results.json").write_text(json.dumps(_results(0.86, params=5, bytes=9)))
    (tmp_path / "drop.log").write_text("TypeError: factorized kernel\n")
    runs, failures = order.load(tmp_path)
    assert runs["prune"]["params"] == 5 and runs["drop"] is None
    assert failures["drop"] == "TypeError: factorized kernel" and failures["kd"] == "not run"
    teacher = {"f1": 0.88, "accuracy": 0.8, "params": 22e6, "bytes": 90e6}
    metrics = ("f1", "accuracy")
    singles = {
        m: [order.single_row(n, runs[n], teacher[m], m) for n in order.SINGLES] for m in metrics
    }
    pairs = {
        m: [order.pair_row(a, b, runs, teacher[m], m) for a, b in order.PAIRS] for m in metrics
    }
    text = order.markdown(singles, pairs, teacher, failures)
    assert "| prune: structured pruning" in text and "| 0.8600 / 0.5000 |" in text
    assert "97.7 / 62.5" in text  # 0.86 / 0.88, 0.5 / 0.8
    assert "`drop`: TypeError: factorized kernel" in text


def test_scores_in_another_metric():
    runs = {"kd": _results(0.85), "int8": _results(0.87), "kd-int8": _results(0.84)}
    row = order.pair_row("kd", "int8", runs, teacher=0.6, metric="accuracy")
    assert row["ab"] == 0.5 and row["predicted"] == pytest.approx(0.4)
