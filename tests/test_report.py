"""Tests for bertjax.report: gathering results.json, % of reference, the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertjax import report

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write(runs: Path, name: str, **results) -> None:
    run = runs / name
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps(results))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """Four runs over two tasks; `teacher` is larger but not a 'finetune' run."""
    runs = tmp_path / "runs"
    _write(
        runs,
        "rte/finetune_l6",
        task="rte",
        model="minilm-l6-h384",
        method="finetune",
        metrics={"accuracy": 0.80},
        params=22_700_000,
        nonzero_params=22_700_000,
        bytes=90_800_000,
        train_seconds=100.0,
        examples_per_second=50.0,
        latency_ms={"b1_s128": 4.0},
    )
    _write(
        runs,
        "rte/prune_50",
        task="RTE",
        model="minilm-l6-h384",
        method="prune_magnitude",
        metrics={"accuracy": 0.72},
        params=22_700_000,
        nonzero_params=11_350_000,
        bytes=45_400_000,
    )
    _write(
        runs,
        "mrpc/finetune_l3",
        task="mrpc",
        model="minilm-l3-h384",
        method="finetune",
        metrics={"f1": 0.85, "accuracy": 0.78},
        params=17_200_000,
        bytes=68_900_000,
    )
    _write(
        runs,
        "mrpc/teacher",
        task="mrpc",
        model="minilm-l6-h384",
        method="distill",
        metrics={"f1": 0.90, "accuracy": 0.84},
        params=22_700_000,
        bytes=90_800_000,
    )
    return runs


def _by_run(rows):
    return {row["run"]: row for row in rows}


def test_gather_reads_every_run_and_main_metric(runs):
    rows = report.gather(runs)
    assert [row["run"] for row in rows] == [
        "mrpc/finetune_l3",
        "mrpc/teacher",
        "rte/finetune_l6",
        "rte/prune_50",
    ]
    by_run = _by_run(rows)
    assert by_run["rte/prune_50"]["task"] == "rte"  # 'RTE' is canonicalised
    assert by_run["mrpc/teacher"]["main_metric"] == "f1"
    assert by_run["mrpc/teacher"]["main"] == pytest.approx(0.90)
    assert by_run["rte/prune_50"]["main_metric"] == "accuracy"


def test_default_reference_is_largest_finetune_run(runs):
    by_run = _by_run(report.add_reference(report.gather(runs)))
    assert by_run["rte/prune_50"]["reference_run"] == "rte/finetune_l6"
    assert by_run["rte/prune_50"]["percent"] == pytest.approx(90.0)
    assert by_run["rte/finetune_l6"]["percent"] == pytest.approx(100.0)
    # Only finetune runs qualify, so the larger 'distill' teacher is not it.
    assert by_run["mrpc/teacher"]["reference_run"] == "mrpc/finetune_l3"
    assert by_run["mrpc/teacher"]["percent"] == pytest.approx(0.90 / 0.85 * 100)


def test_reference_regex_overrides_default(runs):
    by_run = _by_run(report.add_reference(report.gather(runs), reference="teacher"))
    assert by_run["mrpc/finetune_l3"]["percent"] == pytest.approx(0.85 / 0.90 * 100)
    # No rte run matches 'teacher': that task falls back to its finetune run.
    assert by_run["rte/prune_50"]["percent"] == pytest.approx(90.0)


def test_reference_can_be_a_path_outside_runs_dir(runs, tmp_path):
    _write(tmp_path, "elsewhere", task="rte", method="finetune", metrics={"accuracy": 0.9})
    rows = report.add_reference(report.gather(runs), reference=str(tmp_path / "elsewhere"))
    assert _by_run(rows)["rte/prune_50"]["percent"] == pytest.approx(80.0)


def test_reference_dir_of_runs_gives_one_reference_per_task(runs, tmp_path):
    teachers = tmp_path / "teachers"
    _write(teachers, "rte", task="rte", method="finetune", metrics={"accuracy": 0.96})
    _write(teachers, "mrpc", task="mrpc", method="finetune", metrics={"f1": 0.85})
    by_run = _by_run(report.add_reference(report.gather(runs), reference=str(teachers)))
    assert by_run["rte/prune_50"]["percent"] == pytest.approx(75.0)
    assert by_run["mrpc/finetune_l3"]["percent"] == pytest.approx(100.0)
    assert by_run["rte/prune_50"]["reference_run"] == str(teachers / "rte")


def test_render_markdown_rows_and_missing_fields(runs):
    markdown = report.render_markdown(report.gather(runs))
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 4  # header, separator, one row per run
    cells = {line.split(" | ")[0].strip("| "): line.strip("|").split(" | ") for line in lines[2:]}
    prune = [cell.strip() for cell in cells["rte/prune_50"]]
    assert prune == [
        "rte/prune_50",
        "rte",
        "minilm-l6-h384",
        "prune_magnitude",
        "accuracy 0.7200",
        "90.0",
        "22.70M",
        "11.35M",
        "45.40",
        "-",  # quantized size
        "45.40",  # shipped: no sparse or quantized size reported, so the dense one
        "-",  # label loyalty
        "-",  # probability loyalty
        "-",  # teacher r (regression loyalty)
        "-",  # latency
    ]
    reference = [cell.strip() for cell in cells["rte/finetune_l6 (ref)"]]
    assert reference[5] == "100.0"
    assert reference[14] == "b1_s128=4.00"
    mrpc = [cell.strip() for cell in cells["mrpc/finetune_l3 (ref)"]]
    assert mrpc[4] == "f1 0.8500"
    assert mrpc[7] == "-"  # no nonzero_params in that results.json


def test_cli_writes_markdown_and_png(runs):
    result = subprocess.run(
        [sys.executable, "-m", "bertjax.report", str(runs), "--reference", "teacher"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "mrpc/teacher (ref)" in result.stdout
    markdown = (runs / "report.md").read_text()
    assert "rte/prune_50" in markdown
    png = (runs / "report.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000


def test_out_prefix(runs, tmp_path):
    assert report.main([str(runs), "--out", str(tmp_path / "out" / "summary")]) == 0
    assert (tmp_path / "out" / "summary.md").is_file()
    assert (tmp_path / "out" / "summary.png").read_bytes().startswith(PNG_SIGNATURE)


def test_cli_fails_clearly_without_results(tmp_path):
    (tmp_path / "empty" / "run").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "bertjax.report", str(tmp_path / "empty")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "no results.json" in result.stderr


def test_unreadable_results_are_skipped(runs, capsys):
    (runs / "broken").mkdir()
    (runs / "broken" / "results.json").write_text("{not json")
    assert len(report.gather(runs)) == 4
    assert "skipping" in capsys.readouterr().err


def test_quantized_size_and_loyalty_columns(tmp_path):
    _write(
        tmp_path,
        "mrpc/qat",
        task="mrpc",
        method="quant_qat_w8a8",
        metrics={"f1": 0.85},
        bytes=90_000_000,
        quantized_bytes=58_650_000,
        label_loyalty=0.9342,
        probability_loyalty=0.93411,
    )
    _write(tmp_path, "stsb/kd", task="stsb", metrics={"pearson": 0.8}, teacher_pearson=0.9512)
    row = [
        cell.strip()
        for cell in report.render_markdown(report.gather(tmp_path))
        .splitlines()[2]
        .strip("|")
        .split(" | ")
    ]
    assert row[9:14] == ["58.65", "58.65", "0.934", "0.934", "-"]
    stsb = report.render_markdown(report.gather(tmp_path)).splitlines()[3].strip("|").split(" | ")
    assert [cell.strip() for cell in stsb[11:14]] == ["-", "-", "0.951"]


def test_plot_x_is_the_size_each_method_ships(tmp_path):
    dense = 90_855_944
    _write(tmp_path, "ref", task="mrpc", method="finetune", metrics={"f1": 0.9}, bytes=dense)
    _write(
        tmp_path,
        "mag70",
        task="mrpc",
        method="prune_magnitude",
        metrics={"f1": 0.85},
        bytes=dense,
        sparse_bytes=62_000_000,
    )
    _write(
        tmp_path,
        "int8",
        task="mrpc",
        method="quant_ptq_int8_dynamic",
        metrics={"f1": 0.89},
        bytes=23_030_608,  # the stored int8 artifact
        latency_ms={"b1_s128": 12.0, "b32_s128": 190.0},
    )
    _write(
        tmp_path,
        "qat",
        task="mrpc",
        method="quant_qat_w8a8",
        metrics={"f1": 0.88},
        bytes=dense,
        quantized_bytes=58_650_000,
        smoke=True,
    )
    points, percent, key = report.plot_points(report.gather(tmp_path))
    by_run = {point["run"]: point for point in points}
    assert by_run["mag70"]["size_mb"] == 62_000_000 / 1e6
    assert by_run["int8"]["size_mb"] == 23_030_608 / 1e6
    assert by_run["qat"]["size_mb"] == 58_650_000 / 1e6
    assert by_run["ref"]["size_mb"] == dense / 1e6
    assert percent and by_run["int8"]["y"] == pytest.approx(100 * 0.89 / 0.9)
    assert key == "b1_s128" and by_run["int8"]["latency_ms"] == 12.0
    assert by_run["mag70"]["latency_ms"] is None
    assert [by_run[r]["family"] for r in ("ref", "mag70", "int8")] == [
        "fine-tuning",
        "unstructured pruning",
        "quantization",
    ]
    assert by_run["ref"]["reference"] and by_run["ref"]["label"] == "ref (ref)"
    assert by_run["qat"]["smoke"] and not by_run["int8"]["smoke"]
    png = report.plot(report.gather(tmp_path), tmp_path / "report.png")  # with a latency panel
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_a_lone_run_plots_its_metric_not_100_percent(tmp_path):
    _write(tmp_path, "only", task="rte", method="finetune", metrics={"accuracy": 0.7}, bytes=4e7)
    points, percent, _ = report.plot_points(report.gather(tmp_path))
    assert not percent and points[0]["y"] == 0.7


def test_smoke_runs_are_marked_and_not_a_default_reference(tmp_path):
    _write(
        tmp_path,
        "big",
        task="rte",
        method="finetune",
        metrics={"accuracy": 0.5},
        params=9e7,
        smoke=True,
    )
    _write(tmp_path, "real", task="rte", method="finetune", metrics={"accuracy": 0.7}, params=2e7)
    rows = report.add_reference(report.gather(tmp_path))
    assert {row["reference_run"] for row in rows} == {"real"}
    assert "| big (smoke) |" in report.render_markdown(report.gather(tmp_path))


@pytest.mark.parametrize(
    ("method", "family"),
    [
        ("prune_movement_hard_adam", "unstructured pruning"),
        ("prune_structured", "structured pruning"),
        ("layer_drop_top2", "layer dropping"),
        ("theseus_linear", "distillation"),
        ("prune_magnitude+bitfit", "unstructured pruning + BitFit"),
        ("lowrank", "low-rank factorization"),
        ("ladabert+distill_kd_soft_ce", "LadaBERT + distillation"),
        (None, "other"),
    ],
)
def test_method_family(method, family):
    assert report.method_family(method) == family


def test_labels_at_one_point_do_not_overlap():
    anchors = [(100.0, 100.0)] * 3 + [(104.0, 101.0)]
    sizes = [(40.0, 7.0)] * 4
    offsets = report.label_offsets(anchors, sizes)
    boxes = [
        (x + dx, y + dy, x + dx + w, y + dy + h)
        for (x, y), (dx, dy), (w, h) in zip(anchors, offsets, sizes, strict=True)
    ]
    assert not any(report._overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
