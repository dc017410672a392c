"""`python -m bertjax.reproduce`: the smoke budget end to end, resumable; the claims' rule."""

import json
from pathlib import Path

import numpy as np
import pytest

from bertjax.reproduce import __main__ as cli
from bertjax.reproduce import cells, claims, grid


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
