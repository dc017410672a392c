"""`python -m bertjax.reproduce`: the smoke budget end to end, resumable; the claims' rule."""

import json
from pathlib import Path

import numpy as np
import pytest

from bertjax.reproduce import __main__ as cli
from bertjax.reproduce import cells, claims, grid, peers, table


def _run(tmp_path, *extra):
    args = ["--budget", "smoke", "--seeds", "2", "--tasks", "rte", "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "out"), *extra]  # fmt: skip
    return cli.main(args)


@pytest.mark.slow  # 49 s (8 smoke runs); the claim rule and the configs stay in the default suite
def test_smoke_budget_writes_the_multi_seed_table_and_resumes(tmp_path, teacher_dir, monkeypatch):
    assert _run(tmp_path, "--families", "quantization", "--no-latency") == 0
    table = (tmp_path / "out" / "table.md").read_text()
    for name in ("teacher", "ptq-w8a8", "ptq-int8", "qat-w8a8"):
        assert f"| {name} |" in table
    assert "± " in table and "(2) |" in table  # mean ± std over the two seeds
    assert "Tasks with every cell finished: rte." in table
    gathered = json.loads((tmp_path / "out" / "results.json").read_text())
    teachers = gathered["runs"]["rte"]["teacher"]
    assert [t["metrics"] != teachers[0]["metrics"] for t in teachers] == [False, True] or (
        teachers[0]["train_seconds"] != teachers[1]["train_seconds"]
    )
    (claim,) = [c for c in gathered["claims"] if c["claim"] == "8-bit QAT loses < 1 point"]
    assert claim["verdict"] in ("held", "not held", "inconclusive") and claim["n"] == 2
    # Students start from their own seed's teacher; students' exports are gone, teachers' stay.
    config = json.loads((tmp_path / "runs/rte/qat-w8a8/seed1/config.json").read_text())
    assert config["model"]["name"].endswith("teacher/seed1/export")
    assert config["train"]["seed"] == 1
    assert (tmp_path / "runs/rte/teacher/seed1/export").is_dir()
    assert not (tmp_path / "runs/rte/qat-w8a8/seed1/export").exists()
    assert not (tmp_path / "runs/rte/qat-w8a8/seed1/checkpoints").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(cells.loop, "train_and_evaluate", no_training)
    assert _run(tmp_path, "--families", "quantization", "--no-latency") == 0


def test_seeds_change_the_random_streams():
    budget = grid.BUDGETS["smoke"]
    (teacher,) = [c for c in grid.cells(budget, ()) if c.name == grid.TEACHER]
    configs = [cells.config_for(teacher, budget, "rte", seed, Path("/runs")) for seed in (0, 1)]
    a, b = (c.to_dict() for c in configs)
    assert a["train"].pop("seed") == 0 and b["train"].pop("seed") == 1
    assert a == b  # nothing else differs


def _runs(a_scores, b_scores):
    as_results = lambda scores: [{"task": "rte", "metrics": {"accuracy": s / 100}} for s in scores]  # noqa: E731
    return {"x": as_results(a_scores), "y": as_results(b_scores)}


@pytest.mark.parametrize(
    ("a", "b", "relation", "margin", "verdict"),
    [
        ([70, 71, 72], [60, 61, 62], ">", 0, "held"),
        ([60, 61, 62], [70, 71, 72], ">", 0, "not held"),
        ([60, 70, 65], [64, 66, 65], ">", 0, "inconclusive"),
        ([69.5, 69.6, 69.4], [70, 70.1, 69.9], "not_below", 1.0, "held"),
        ([66, 66.1, 65.9], [70, 70.1, 69.9], "not_below", 1.0, "not held"),
        ([70], [60], ">", 0, "inconclusive (1 seed)"),
    ],
)
def test_claims_are_decided_by_the_seeds_spread(a, b, relation, margin, verdict):
    claim = claims.Claim("c", "s", claims.score("x"), claims.score("y"), relation, margin)
    decided = claims.decide(claim, _runs(a, b))
    assert decided["verdict"] == verdict
    assert decided["d"] == pytest.approx(np.mean(a) - np.mean(b))
    assert claims.decide(claim, {"x": _runs(a, b)["x"]}) is None  # b never ran


def test_unknown_families_and_fields_are_named():
    with pytest.raises(ValueError, match="unknown families"):
        grid.cells(grid.BUDGETS["small"], ("pruning", "sorcery"))
    config = cells.config_for(
        grid.cells(grid.BUDGETS["small"], ())[0], grid.BUDGETS["small"], "rte", 0, Path("/r")
    )
    with pytest.raises(KeyError, match="no field 'train.epochs'"):
        cells.set_field(config, "train.epochs", 1)


def _finished_teacher(runs: Path, accuracy: float = 0.7) -> Path:
    """A finished rte seed-0 teacher cell: results.json, latency.json, export, config."""
    directory = runs / "rte" / grid.TEACHER / "seed0"
    (directory / "export").mkdir(parents=True)
    results = {"task": "rte", "metrics": {"accuracy": accuracy}, "params": 22_000_000,
               "bytes": 90_000_000}  # fmt: skip
    (directory / "results.json").write_text(json.dumps(results))
    latency = {f"b{b}": {"ms": 10.0 * b, "torch_teacher_ms": 20.0 * b,
                         "speedup_vs_torch_teacher": 2.0} for b in (1, 32)}  # fmt: skip
    (directory / "latency.json").write_text(json.dumps(latency))
    (directory / "config.json").write_text(json.dumps({"data": {"max_seq_length": 128}}))
    return directory


PEERS = {
    "b1": {"torch_teacher_ms": 8.0, "ort_int8_ms": 4.0, "ort_int8_speedup_vs_torch_teacher": 2.0},
    "b32": {"torch_teacher_ms": 640.0, "ort_int8_ms": 160.0,
            "ort_int8_speedup_vs_torch_teacher": 4.0},
    "torch_teacher_bytes": 90_000_000,
    "ort_int8_bytes": 23_000_000,
    "dev": {"examples": 277, "torch_teacher": {"accuracy": 0.7}, "ort_int8": {"accuracy": 0.68},
            "ort_int8_loyalty": {"label_loyalty": 0.95, "probability_loyalty": 0.9}},
}  # fmt: skip


def test_peer_rows_and_markers_appear_with_peers_json_and_a_note_without(tmp_path):
    directory = _finished_teacher(tmp_path)
    teacher_only = grid.cells(grid.BUDGETS["small"], ())

    def outputs():
        collected = table.collect(tmp_path, ["rte"], teacher_only, seeds=1)
        table.plot(collected, teacher_only, tmp_path / "plots.png")
        lines = table.task_table("rte", collected["rte"], teacher_only)
        return "\n".join(lines), table.reference_markers("rte", collected["rte"])

    text, markers = outputs()
    assert "| PyTorch fp32 teacher |" not in text and table.PEERS_ABSENT in text
    # Without peers the PyTorch teacher's time from latency.json is the only reference.
    assert markers == [(0, "PyTorch fp32 teacher", 640.0, 70.0)]
    assert (tmp_path / "plots.png").stat().st_size > 0

    (directory / peers.FILE).write_text(json.dumps(PEERS))
    text, markers = outputs()
    rows = text.splitlines()
    teacher_row = [i for i, line in enumerate(rows) if line.startswith("| teacher |")][0]
    assert rows[teacher_row + 1] == (
        "| PyTorch fp32 teacher | peer | 70.00 (seed 0) | 100.0 | 22.00M | 90.00 | "
        "8.0 (1.00x) | 640.0 (1.00x) | - | - |"
    )
    assert rows[teacher_row + 2] == (
        "| ORT int8 teacher | peer | 68.00 (seed 0) | 97.1 | 22.00M | 23.00 | "
        "4.0 (2.00x) | 160.0 (4.00x) | 0.950 | 0.900 |"
    )
    assert table.PEERS_ABSENT not in text
    assert markers == [
        (0, "PyTorch fp32 teacher", 640.0, 70.0),
        (1, "PyTorch fp32 teacher", 90.0, 70.0),
        (0, "ORT int8 teacher", 160.0, 68.0),
        (1, "ORT int8 teacher", 23.0, 68.0),
    ]


def test_a_finished_teacher_gets_its_peers_on_the_next_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cells, "quiet", lambda max_load: True)
    directory = _finished_teacher(tmp_path)
    (teacher,) = grid.cells(grid.BUDGETS["small"], ())
    measured = []

    def fake_measure(export, onnx_dir, task, data):
        measured.append((export, task, data))
        return PEERS

    monkeypatch.setattr(cells.loop, "train_and_evaluate", None)  # finished: never called
    monkeypatch.setattr(peers, "measure", fake_measure)
    monkeypatch.setattr(peers, "missing_runtime", lambda: "onnxruntime not installed")
    cells.run(teacher, grid.BUDGETS["small"], "rte", 0, tmp_path)
    assert not (directory / peers.FILE).exists() and not measured
    assert "rte: no peers.json, onnxruntime not installed" in capsys.readouterr().err

    monkeypatch.setattr(peers, "missing_runtime", lambda: None)
    for budget in (grid.BUDGETS["smoke"], grid.dataclasses.replace(grid.BUDGETS["small"],
                                                                   latency=False)):  # fmt: skip
        cells.run(teacher, budget, "rte", 0, tmp_path)
        assert not measured  # neither the smoke budget nor --no-latency measure peers
    cells.run(teacher, grid.BUDGETS["small"], "rte", 0, tmp_path)
    assert measured == [(directory / "export", "rte", {"max_seq_length": 128})]
    assert json.loads((directory / peers.FILE).read_text()) == PEERS
    cells.run(teacher, grid.BUDGETS["small"], "rte", 0, tmp_path)
    assert len(measured) == 1  # measured once


def test_timing_waits_for_a_quiet_machine_and_the_export_stays_until_then(tmp_path, monkeypatch):
    _finished_teacher(tmp_path)
    budget = grid.dataclasses.replace(grid.BUDGETS["small"], peers=False)
    student = grid.Cell("ptq-int8", "quantization", "quant_ptq", "model={teacher},int8=true")
    directory = cells.workdir(tmp_path, "rte", student, 0)
    (directory / "export").mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps({"metrics": {"accuracy": 0.6}}))
    timed = []
    monkeypatch.setattr(cells, "measure", lambda export, runs, task: timed.append(export) or {})
    monkeypatch.setattr(cells.os, "getloadavg", lambda: (7.5, 7.0, 6.0))
    cells.run(student, budget, "rte", 0, tmp_path)
    assert not timed and (directory / "export").is_dir()  # busy: waits, keeps the export
    assert cli.catch_up(["rte"], [student], budget, tmp_path, cells.MAX_LOAD) == 1
    monkeypatch.setattr(cells.os, "getloadavg", lambda: (1.2, 2.0, 3.0))
    assert cli.catch_up(["rte"], [student], budget, tmp_path, cells.MAX_LOAD) == 0
    assert timed == [directory / "export"] and (directory / "latency.json").exists()
    assert not (directory / "export").exists()  # timed: a student's export goes
    # Quiet at the start, busy by the end: the timing is discarded and waits again.
    (directory / "latency.json").unlink()
    (directory / "export").mkdir()
    monkeypatch.setattr(cells, "measure", lambda export, runs, task: {"load_average_1min": 5.0})
    assert cli.catch_up(["rte"], [student], budget, tmp_path, cells.MAX_LOAD) == 1
    assert not (directory / "latency.json").exists() and (directory / "export").is_dir()


def test_timings_taken_on_a_busy_machine_are_marked():
    timed = lambda ms, torch: {b: {"ms": ms, "torch_teacher_ms": torch,  # noqa: E731
                                   "speedup_vs_torch_teacher": torch / ms}
                               for b in ("b1", "b32")}  # fmt: skip
    record = lambda latency: [{"task": "rte", "metrics": {"accuracy": 0.6}, "params": 1,  # noqa: E731
                               "bytes": 4, "latency": latency}]  # fmt: skip
    runs = {grid.TEACHER: record(timed(20.0, 24.0)), "a": record(timed(10.0, 25.0)),
            "b": record(timed(11.0, 80.0))}  # fmt: skip
    cell_list = [grid.Cell(name, "x", "finetune", "") for name in (grid.TEACHER, "a", "b")]
    lines = "\n".join(table.task_table("rte", runs, cell_list))
    assert "10.0 (2.50x) |" in lines and "11.0 (7.27x) † |" in lines and table.BUSY_NOTE in lines


def test_the_stack_starts_from_its_cells_exports_which_stay(tmp_path, monkeypatch):
    budget = grid.dataclasses.replace(grid.BUDGETS["small"], peers=False)
    with pytest.raises(ValueError, match="starts from l3-kd: add its family 'distillation'"):
        grid.cells(budget, ("stack",))
    cell_list = grid.cells(budget, ("distillation", "stack"))
    stack = [c for c in cell_list if c.family == "stack"]
    student_int8, prune, int8, prune_kd, int8_kd, *deeper, teacher_pruned, teacher_int8 = stack[:-2]
    long_pruned, long_int8 = stack[-2:]
    assert (long_pruned.name, long_int8.start) == ("h5-f5-kd-long", "h5-f5-kd-long")
    long_config = cells.config_for(long_pruned, budget, "rte", 0, tmp_path)
    assert long_config.train.num_epochs == budget.teacher_epochs != budget.method_epochs
    assert [c.name for c in deeper] == ["l4-kd", "l4-kd-h5-f5-kd", "l4-kd-h5-f5-kd-int8"]
    assert grid.starts(cell_list) == {"l3-kd", "l3-kd-h5-f5", "l3-kd-h5-f5-kd", "l4-kd",
                                      "l4-kd-h5-f5-kd", "h5-f5-kd", "h5-f5-kd-long"}  # fmt: skip
    starts = (student_int8.start, teacher_pruned.start, teacher_int8.start)
    assert starts == ("l3-kd", "", "h5-f5-kd")
    pruned_teacher = cells.config_for(teacher_pruned, budget, "rte", 0, tmp_path)
    assert pruned_teacher.model.name == pruned_teacher.teacher  # the teacher, pruned with KD
    # The KD variant distills its seed's teacher while it prunes.
    kd_config = cells.config_for(prune_kd, budget, "rte", 1, tmp_path)
    assert kd_config.distill.kind == "soft_ce"
    assert kd_config.teacher == str(tmp_path / "rte" / "teacher" / "seed1" / "export")
    assert "distill" not in cells.config_for(prune, budget, "rte", 1, tmp_path)
    config = cells.config_for(int8, budget, "rte", 2, tmp_path)
    assert config.model.name == str(tmp_path / "rte" / "l3-kd-h5-f5" / "seed2" / "export")
    _finished_teacher(tmp_path)
    with pytest.raises(FileNotFoundError, match="starts from l3-kd, which has no export"):
        cells.run(prune, budget, "rte", 0, tmp_path)
    # A finished seed-0 student is timed; its export stays when another cell starts from it.
    monkeypatch.setattr(cells, "measure", lambda export, runs, task: {})
    monkeypatch.setattr(cells.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    for keep in (True, False):
        directory = cells.workdir(tmp_path, "rte", prune, 0)
        (directory / "export").mkdir(parents=True, exist_ok=True)
        (directory / "results.json").write_text(json.dumps({"metrics": {"accuracy": 0.6}}))
        (directory / "latency.json").unlink(missing_ok=True)
        cells.run(prune, budget, "rte", 0, tmp_path, keep_export=keep)
        assert (directory / "latency.json").exists()
        assert (directory / "export").is_dir() == keep


def test_the_north_star_claim_weighs_the_stack_against_97_percent_of_the_teacher():
    (claim,) = [c for c in claims.claims(3, 3) if c.source == "bertjax north star"]
    teacher = [{"task": "rte", "metrics": {"accuracy": a}} for a in (0.60, 0.62)]
    for shares, verdict in (((0.99, 0.995, 0.985), "held"), ((0.90, 0.91, 0.92), "not held")):
        stack = [{"task": "rte", "metrics": {"accuracy": 0.61 * s}} for s in shares]
        decided = claims.decide(claim, {"teacher": teacher, "l3-kd-h5-f5-int8": stack})
        assert decided["verdict"] == verdict
        assert decided["a"] == pytest.approx([100 * s for s in shares])


def test_the_north_star_table_pairs_each_seed_with_its_teacher_over_all_five_tasks():
    metric = {"rte": "accuracy", "mrpc": "f1", "stsb": "pearson",
              "cola": "matthews_correlation", "sst2": "accuracy"}  # fmt: skip
    timed = lambda x: {b: {"ms": 1.0, "speedup_vs_torch_teacher": x} for b in ("b1", "b32")}  # noqa: E731

    def result(task, seed, value, speedup=None):
        r = {"task": task, "seed": seed, "metrics": {metric[task]: value}}
        return {**r, "latency": timed(speedup)} if speedup else r

    def collected(cola_seed1, speedups):
        out = {}
        for i, task in enumerate(grid.TASKS):
            teachers = [result(task, 0, 0.5), result(task, 1, 0.4)]
            ours = [result(task, 0, 0.5 * 0.99, speedups[i]),
                    result(task, 1, 0.4 * (cola_seed1 if task == "cola" else 1.0))]  # fmt: skip
            out[task] = {grid.TEACHER: teachers, "x": ours}
        return out

    cell_list = [grid.Cell(n, "stack", "finetune", "") for n in (grid.TEACHER, "x")]
    (row,) = table.north_star(collected(1.0, [8.5, 9.0, 8.1, 8.2, 10.0]), cell_list)
    # Seed 1's students score exactly as their own teachers: 100 %, not 100 x 0.4 / 0.45.
    assert row["seeds"] == [0, 1] and row["mean_share"] == pytest.approx([99.0, 100.0])
    assert row["speedup"]["b32"] == (8.1, 10.0) and row["met"]
    (row,) = table.north_star(collected(0.7, [8.5, 9.0, 8.1, 8.2, 10.0]), cell_list)
    assert row["worst"] == {"share": pytest.approx(70.0), "task": "cola", "seed": 1}
    assert row["mean_share"][1] == pytest.approx(94.0) and not row["met"]
    (row,) = table.north_star(collected(1.0, [8.5, 9.0, 7.9, 8.2, 10.0]), cell_list)
    assert not row["met"]  # one task below 8x at batch 32
    assert "| x | 2 | 99.0, 100.0 |" in "\n".join(table.north_star_table([row]))
    partial = collected(1.0, [8.5] * 5)
    partial["cola"]["x"] = partial["cola"]["x"][:1]  # seed 1 unfinished on CoLA
    assert table.north_star(partial, cell_list)[0]["seeds"] == [0]
    del partial["sst2"]
    assert table.north_star(partial, cell_list) == [] and table.north_star_table([]) == []


@pytest.mark.slow  # ONNX export and int8 quantization of a tiny model, two dev passes
def test_peers_of_a_tiny_teacher_are_timed_sized_and_scored(tmp_path, teacher_dir):
    pytest.importorskip("onnxruntime")
    from bertjax import models

    if peers.missing_runtime():
        pytest.skip(peers.missing_runtime())
    model, params = models.load_pretrained("tiny", head="classification", num_labels=2)
    export = models.save_pretrained(model, params, tmp_path / "export", tokenizer=str(teacher_dir))
    data = {"max_seq_length": 32, "eval_limit": 16}
    measured = peers.measure(export, tmp_path / "onnx", "rte", data, repeats=1)
    for batch in ("b1", "b32"):
        entry = measured[batch]
        assert entry["torch_teacher_ms"] > 0 and entry["ort_int8_ms"] > 0
        assert entry["ort_int8_speedup_vs_torch_teacher"] == pytest.approx(
            entry["torch_teacher_ms"] / entry["ort_int8_ms"]
        )
    assert 0 < measured["ort_int8_bytes"] < 0.4 * measured["torch_teacher_bytes"]
    dev = measured["dev"]
    assert dev["examples"] == 16 and 0 < dev["max_abs_logit_diff"] < 0.1
    assert dev["ort_int8_loyalty"]["label_loyalty"] >= 0.8
    assert set(dev["torch_teacher"]) == set(dev["ort_int8"]) >= {"accuracy"}


def test_a_lost_runs_directory_is_restored_from_the_committed_table_but_needed_exports_retrain(
    tmp_path,
):
    from bertjax.reproduce import restore

    budget = grid.dataclasses.replace(grid.BUDGETS["small"], peers=False)
    cell_list = grid.cells(budget, ("distillation", "stack"))
    record = lambda seed: {"metrics": {"accuracy": 0.6}, "seed": seed}  # noqa: E731
    # Committed: everything of seed 0; seed 1 lacks the stack, which needs l3-kd's export.
    committed = {"rte": {c.name: [record(0), record(1)] for c in cell_list if c.family != "stack"}}
    for c in cell_list:
        if c.family == "stack":
            committed["rte"][c.name] = [{**record(0), "latency": {"b1": {"ms": 1.0}}}]
    committed["rte"][grid.TEACHER][0]["peers"] = {"b1": {}}
    runs = tmp_path / "runs"
    chosen = restore.plan(committed, runs, ["rte"], cell_list, 2)
    retrained = {(t, c, s) for t in ["rte"] for c in committed["rte"] for s in (0, 1)} - set(chosen)
    # Seed 1's stack needs l3-kd (start) and the teacher; nothing of seed 0 retrains.
    stack = {c.name for c in cell_list if c.family == "stack"}
    assert retrained == {("rte", "teacher", 1), ("rte", "l3-kd", 1),
                         *(("rte", name, 1) for name in stack)}  # fmt: skip
    assert restore.restore(committed, runs, ["rte"], cell_list, 2) == len(chosen)
    int8 = runs / "rte" / "l3-kd-h5-f5-int8" / "seed0"
    assert json.loads((int8 / "latency.json").read_text()) == {"b1": {"ms": 1.0}}
    assert (runs / "rte" / "teacher" / "seed0" / peers.FILE).exists()
    collected = table.collect(runs, ["rte"], cell_list, 2)
    assert collected["rte"]["l3-kd-h5-f5-int8"][0]["latency"] == {"b1": {"ms": 1.0}}
    assert [r["seed"] for r in collected["rte"]["l3-emd"]] == [0, 1]
    # Tables written meanwhile keep the committed runs waiting to be retrained.
    merged = restore.merge(collected, committed)
    assert [r["seed"] for r in merged["rte"][grid.TEACHER]] == [0, 1]
    assert [r["seed"] for r in merged["rte"]["l3-kd-h5-f5"]] == [0]
    # An export still on disk is not retrained: seed 1's l3-kd is restored once it is there.
    (runs / "rte" / "l3-kd" / "seed1" / "export").mkdir(parents=True)
    assert ("rte", "l3-kd", 1) in restore.plan(committed, runs, ["rte"], cell_list, 2)
    assert restore.plan(committed, runs, ["rte"], cell_list, 2).keys().isdisjoint(chosen)


def test_cells_selects_what_the_named_cells_need_and_tables_keep_the_other_tasks():
    from bertjax.reproduce import restore

    cell_list = grid.cells(grid.BUDGETS["small"])
    chosen = [c.name for c in grid.select(cell_list, ["l4-kd-h5-f5-kd-int8", "l3-kd"])]
    assert chosen == ["teacher", "l3-kd", "l4-kd", "l4-kd-h5-f5-kd", "l4-kd-h5-f5-kd-int8"]
    with pytest.raises(ValueError, match="unknown cells"):
        grid.select(cell_list, ["l9-kd"])
    committed = {"rte": {"teacher": [{"metrics": {}, "seed": 0}]}}
    collected = {"mrpc": {"teacher": [{"metrics": {"f1": 0.9}, "seed": 0}]}}
    merged = restore.merge(collected, committed)
    assert list(merged) == ["rte", "mrpc"] and merged["mrpc"]["teacher"][0]["metrics"]


def test_a_cell_added_after_a_restore_reopens_the_finished_runs_it_starts_from(tmp_path):
    from bertjax.reproduce import restore

    budget = grid.dataclasses.replace(grid.BUDGETS["small"], peers=False)
    cell_list = grid.select(grid.cells(budget), ["l3-kd-int8"])
    runs = tmp_path / "runs"
    committed = {"rte": {name: [{"metrics": {"accuracy": 0.6}, "seed": 0}]
                         for name in ("teacher", "l3-kd")}}  # fmt: skip
    assert restore.restore(committed, runs, ["rte"], cell_list[:2], 1) == 2  # before the cell
    (runs / "rte" / "teacher" / "seed0" / "export").mkdir()  # the teacher's export is here
    reopened = restore.reopen(runs, ["rte"], cell_list, 1)
    assert reopened == [runs / "rte" / "l3-kd" / "seed0"]
    assert (reopened[0] / "results.reopened.json").exists()
    assert not (reopened[0] / "results.json").exists()
    assert restore.reopen(runs, ["rte"], cell_list, 1) == []
    # A finished cell is read back without its teacher's export (a restored seed).
    int8 = cells.workdir(runs, "rte", cell_list[-1], 1)
    int8.mkdir(parents=True)
    (int8 / "results.json").write_text(json.dumps({"metrics": {"accuracy": 0.5}}))
    assert cells.run(cell_list[-1], budget, "rte", 1, runs)["metrics"] == {"accuracy": 0.5}
