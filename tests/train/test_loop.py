"""`train_and_evaluate` end to end on a tiny random model and real GLUE data."""

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from safetensors.numpy import load_file

from bertjax import models
from bertjax.train import checkpoint, interrupt, loop, steps, writers
from configs import finetune

REPO = Path(__file__).resolve().parents[2]


def _config(teacher_dir, task="rte", **train):
    config = finetune.get_config(f"model=tiny,task={task},smoke=True")
    config.model.tokenizer = str(teacher_dir)
    config.data.max_seq_length = 32
    config.data.train_limit = 48
    config.data.eval_limit = 40
    config.train.batch_size = 8
    config.train.eval_batch_size = 16
    for key, value in train.items():
        config.train[key] = value
    return config


def test_smoke_run_writes_results_logs_and_export(tmp_path, teacher_dir, capsys):
    results = loop.train_and_evaluate(_config(teacher_dir, task="stsb"), tmp_path)
    # It says what it is about to do; the final metrics are left to the caller's last line.
    err = capsys.readouterr().err
    assert (
        "bertjax: stsb, model tiny, method finetune: 48 train / 40 eval examples, 6 steps "
        f"(1 epoch of 6 batches of 8), on 8 cpu devices; new run in {tmp_path} [smoke run]\n"
    ) in err
    assert "bertjax: compiling the train step" in err and "step 6:" not in err
    assert set(results["metrics"]) == {"pearson", "spearmanr"}
    assert results["eval_examples"] == 40 and results["steps"] == 6
    saved = json.loads((tmp_path / "results.json").read_text())
    for key in (
        "task",
        "model",
        "method",
        "metrics",
        "params",
        "nonzero_params",
        "bytes",
        "train_seconds",
        "examples_per_second",
    ):
        assert key in saved, key
    assert saved["task"] == "stsb" and saved["method"] == "finetune"
    assert saved["smoke"] is True  # tiny data: the report marks it
    assert saved["bytes"] == 4 * saved["params"]
    assert json.loads((tmp_path / "config.json").read_text())["task"] == "stsb"
    records = writers.read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 7))
    assert any("eval_pearson" in r for r in records)
    assert any((tmp_path / "tensorboard").iterdir())
    # The export is a regression model our loader (and transformers) reads back.
    model, params = models.load_pretrained(tmp_path / "export", head="regression")
    assert model.num_labels_out == 1 and (tmp_path / "export" / "vocab.txt").exists()
    assert params["bert"]["embeddings"]["word_embeddings"]["embedding"].shape[1] == 128


def test_regression_run_reports_loyalty_to_its_teacher(tmp_path, teacher_dir):
    loop.train_and_evaluate(_config(teacher_dir, task="stsb"), tmp_path / "teacher")
    config = _config(teacher_dir, task="stsb", num_epochs=0)  # the teacher itself, untrained
    config.model.name = config.teacher = str(tmp_path / "teacher" / "export")
    results = loop.train_and_evaluate(config, tmp_path / "copy")
    assert results["teacher_pearson"] == pytest.approx(1.0, abs=1e-6)
    assert results["teacher_rmse"] < 1e-5
    assert "label_loyalty" not in results


def test_non_finite_loss_stops_the_run_naming_the_step(tmp_path, teacher_dir, monkeypatch):
    real_loss = steps.task_loss

    def poisoned(logits, labels, weights, regression):
        return real_loss(logits, labels, weights, regression) * jnp.nan

    monkeypatch.setattr(steps, "task_loss", poisoned)
    with pytest.raises(FloatingPointError, match="at step 1"):
        loop.train_and_evaluate(_config(teacher_dir), tmp_path)


FINETUNE = "configs/finetune.py:model=tiny,task=rte,smoke=True"
# Movement pruning keeps its scores, masks and the scores' Adam moments in
# TrainState.method_state; with smoke's every_steps=1 the cubic schedule changes the
# masks at every step up to 13 of 18.
MOVEMENT = "configs/prune_movement.py:model=tiny,task=rte,smoke=True,sparsity=0.5,scores=adam"


def _cli(workdir, teacher_dir, *extra, config=FINETUNE):
    return [
        sys.executable,
        "-m",
        "bertjax.main",
        f"--config={config}",
        f"--workdir={workdir}",
        f"--config.model.tokenizer={teacher_dir}",
        "--config.data.max_seq_length=32",
        "--config.data.train_limit=48",
        "--config.data.eval_limit=40",
        "--config.train.batch_size=8",
        "--config.train.num_epochs=3",
        "--config.checkpoint.every_steps=2",
        "--config.export=False",
        *extra,
    ]


def _losses(workdir):
    return {
        r["step"]: r["loss"] for r in writers.read_jsonl(workdir / "metrics.jsonl") if "loss" in r
    }


def _final_state(workdir, step):
    """The raw pytree (params, opt_state, method_state, step, rng) of checkpoint `step`."""
    path = (workdir / "checkpoints" / str(step) / "default").resolve()
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(path)


@pytest.mark.parametrize(
    ("config", "signum"),
    # The movement run covers the finetune run's state and more: finetune alone is slow-only.
    # SIGINT saves the step it stops at (checked cheaply in-process below); its whole
    # rerun-equals-uninterrupted check is slow-only too.
    [
        pytest.param(FINETUNE, signal.SIGKILL, marks=pytest.mark.slow),
        # 84 s: slow-only since session 10; the in-process SIGINT check below and the
        # multi-process resume test (test_distributed) keep resuming in the default suite.
        pytest.param(MOVEMENT, signal.SIGKILL, marks=pytest.mark.slow),
        pytest.param(MOVEMENT, signal.SIGINT, marks=pytest.mark.slow),
    ],
    ids=["finetune", "prune_movement", "prune_movement_sigint"],
)
def test_kill_and_rerun_ends_like_an_uninterrupted_run(tmp_path, teacher_dir, config, signum):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    cli = functools.partial(_cli, teacher_dir=teacher_dir, config=config)
    subprocess.run(cli(whole), cwd=REPO, env=env, check=True, capture_output=True)

    stderr = tmp_path / "killed.stderr"  # a file, not a pipe: the child never blocks on it
    with stderr.open("w") as errors:
        process = subprocess.Popen(
            cli(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=errors
        )
    deadline = time.time() + 240
    checkpoints = killed / "checkpoints"

    def saved_steps():
        names = [p.name for p in checkpoints.iterdir()] if checkpoints.exists() else []
        return [int(name) for name in names if name.isdigit()]

    while time.time() < deadline and process.poll() is None:
        if any(step >= 6 for step in saved_steps()):
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signum)
    process.wait()
    assert not (killed / "results.json").exists()
    # The rerun resumes mid-run: for pruning, with mask updates still to come.
    resumed = max(saved_steps())
    assert 6 <= resumed <= 12, saved_steps()
    if signum == signal.SIGINT:  # one line, exit 130, and the checkpoint of that very step
        last = stderr.read_text().splitlines()[-1]
        assert process.returncode == 130
        assert last == f"bertjax: interrupted at step {resumed}; re-run the same command to resume"

    rerun = subprocess.run(cli(killed), cwd=REPO, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"bertjax: resumed from step {resumed}\n" in rerun.stderr
    a = json.loads((whole / "results.json").read_text())
    b = json.loads((killed / "results.json").read_text())
    timing = ("train_seconds", "examples_per_second")
    assert {k: v for k, v in a.items() if k not in timing} == {
        k: v for k, v in b.items() if k not in timing
    }
    assert a["steps"] == 18
    assert _losses(whole) == _losses(killed)
    assert sorted(_losses(killed)) == list(range(1, 19))
    # Params, optimizer state and method state (movement scores and masks) bit for bit.
    chex.assert_trees_all_equal(_final_state(whole, 18), _final_state(killed, 18))


def test_export_holds_the_trained_params(tmp_path, teacher_dir, monkeypatch):
    config = _config(teacher_dir)
    loop.train_and_evaluate(config, tmp_path)
    state = load_file(tmp_path / "export" / "model.safetensors")
    assert "classifier.weight" in state and "bert.pooler.dense.weight" in state
    _, exported = models.load_pretrained(tmp_path / "export", head="classification")
    # The export equals the params of the final checkpoint, which training moved.
    initial = loop.create_train_state(config).state
    manager = checkpoint.make_manager(tmp_path, config.checkpoint.keep)
    trained = jax.device_get(checkpoint.restore_latest(manager, initial).params)
    assert int(manager.latest_step()) > 0
    chex.assert_trees_all_close(exported, trained, atol=0, rtol=0)
    query = ("bert", "encoder", "layer", "0", "attention", "self", "query", "kernel")
    before, after = jax.device_get(initial.params), trained
    for key in query:
        before, after = before[key], after[key]
    assert np.abs(np.asarray(after) - np.asarray(before)).max() > 0
    # A finished run of the same config is skipped (checkpoint intervals may differ);
    # another config is refused before anything loads, naming the fields.
    monkeypatch.setattr(loop, "create_train_state", pytest.fail)
    config.checkpoint.every_steps = 5
    assert loop.train_and_evaluate(config, tmp_path) == json.loads(
        (tmp_path / "results.json").read_text()
    )
    config.train.learning_rate, config.train.num_epochs = 5e-5, 2.0
    message = (
        f"workdir {tmp_path} holds a run of another config (train.learning_rate 0.0001 -> "
        "5e-05, train.num_epochs 1.0 -> 2.0): pass --overwrite to replace it, or use a new "
        "--workdir"
    )
    with pytest.raises(ValueError) as refused:
        loop.train_and_evaluate(config, tmp_path)
    assert str(refused.value) == message


def test_sigint_saves_the_current_step_and_stops(tmp_path, teacher_dir, monkeypatch):
    make_train_step = steps.make_train_step

    def interrupted_after_three(*args, **kwargs):
        train_step = make_train_step(*args, **kwargs)

        def step(state, *rest):
            state, values = train_step(state, *rest)
            if int(state.step) == 3:  # as Ctrl-C would, between two steps
                signal.raise_signal(signal.SIGINT)
            return state, values

        return step

    monkeypatch.setattr(steps, "make_train_step", interrupted_after_three)
    config = _config(teacher_dir, num_epochs=2)
    config.checkpoint.every_steps = 100  # only the interrupt saves
    with pytest.raises(interrupt.Interrupted) as stopped:
        loop.train_and_evaluate(config, tmp_path)
    assert str(stopped.value) == "interrupted at step 3; re-run the same command to resume"
    assert stopped.value.exit_status == 130
    assert checkpoint.make_manager(tmp_path, 1).all_steps() == [3]
    assert not (tmp_path / "results.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
