"""Multi-process data parallelism, really run: two `jax.distributed` processes on this
machine (gloo collectives, coordinator on 127.0.0.1) train like one process, and their
checkpoint resumes in one process (and one process's in two)."""

import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bertjax.train import distributed, loop, validation, writers

REPO = Path(__file__).resolve().parents[2]
# Regression: continuous dev metrics to compare.
FINETUNE = ("finetune", "model=tiny,task=stsb,smoke=True")
# Method state (scores, masks, the scores' Adam moments) in the checkpoint too.
MOVEMENT = ("prune_movement", "model=tiny,task=stsb,smoke=True,sparsity=0.5,scores=adam")
# (field, value) of the runs here, in the config and on the command line alike.
OVERRIDES = {
    "data.max_seq_length": 32,
    "data.train_limit": 48,
    "data.eval_limit": 40,
    "train.batch_size": 8,
    "train.eval_batch_size": 8,
    "checkpoint.every_steps": 3,
    "checkpoint.keep": 10,
    "export": False,
}
STEPS = 6  # 48 examples in batches of 8
TIMEOUT = 300


def _config(teacher_dir, run=FINETUNE):
    config = importlib.import_module(f"configs.{run[0]}").get_config(run[1])
    config.model.tokenizer = str(teacher_dir)
    for field, value in OVERRIDES.items():
        block, _, name = field.rpartition(".")
        (config[block] if block else config)[name] = value
    return config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(workdir, teacher_dir, run=FINETUNE, count=2, devices_per_process=2, extra=()):
    """Starts the CLI as `count` processes of one run (each with `devices_per_process`
    CPU devices), output to a log file each; returns `(processes, logs)`."""
    address = f"127.0.0.1:{_free_port()}"
    argv = [
        sys.executable,
        "-m",
        "bertjax.main",
        f"--config=configs/{run[0]}.py:{run[1]}",
        f"--workdir={workdir}",
        f"--config.model.tokenizer={teacher_dir}",
        *(f"--config.{field}={value}" for field, value in OVERRIDES.items()),
        *extra,
        f"--coordinator_address={address}",
        f"--num_processes={count}",
    ]
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}",
        "PYTHONUNBUFFERED": "1",
    }
    logs = [workdir.parent / f"{workdir.name}.process{i}.log" for i in range(count)]
    processes = []
    for i, log in enumerate(logs):
        with log.open("w") as out:  # files, not pipes: a process never blocks on output
            processes.append(
                subprocess.Popen(
                    [*argv, f"--process_id={i}"], cwd=REPO, env=env, stdout=out, stderr=out
                )
            )
    return processes, logs


def _wait(processes, logs, status=0):
    """Their output (stdout and stderr) once all exited `status`; fails naming the
    process that failed first (the others would wait for it: they are killed)."""
    deadline = time.time() + TIMEOUT
    try:
        while time.time() < deadline:
            codes = [process.poll() for process in processes]
            if None not in codes or any(code not in (None, status) for code in codes):
                break
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    texts = [log.read_text() for log in logs]
    codes = [process.returncode for process in processes]
    failed = [i for i, code in enumerate(codes) if code != status] + [None]
    failed.sort(key=lambda i: i is None or codes[i] == -signal.SIGKILL)
    first = failed[0]
    assert first is None, f"exit statuses {codes}; process {first}:\n{texts[first][-3000:]}"
    return texts


def _run_processes(workdir, teacher_dir, run=FINETUNE, **kwargs):
    """The output of a multi-process run (`_launch`) that ended well."""
    return _wait(*_launch(workdir, teacher_dir, run, **kwargs))


def _state(workdir, step):
    """The raw pytree (params, opt_state, step, ...) of checkpoint `step`, read in this
    one process whatever layout wrote it."""
    path = (workdir / "checkpoints" / str(step) / "default").resolve()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as checkpointer:
        saved = checkpointer.metadata(path).item_metadata.tree
        target = jax.tree_util.tree_map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), saved
        )
        return checkpointer.restore(path, target)


def _results(workdir):
    return json.loads((workdir / "results.json").read_text())


def _losses(workdir):
    records = writers.read_jsonl(workdir / "metrics.jsonl")
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _keep_only_step(source, target, step):
    """A copy of run `source` as if it had been stopped after saving `step`."""
    shutil.copytree(source, target)
    for path in (target / "checkpoints").iterdir():
        if path.name.isdigit() and int(path.name) > step:
            shutil.rmtree(path)
    (target / "results.json").unlink()


def _assert_same_run(a, b):
    """Same dev metrics, losses and final params, to float tolerance (the reductions
    over 4 and 8 devices add in different orders)."""
    metrics_a, metrics_b = _results(a)["metrics"], _results(b)["metrics"]
    assert metrics_a.keys() == metrics_b.keys() == {"pearson", "spearmanr"}
    for key in metrics_a:
        assert metrics_a[key] == pytest.approx(metrics_b[key], abs=1e-4), key
    losses_a, losses_b = _losses(a), _losses(b)
    assert sorted(losses_a) == sorted(losses_b) == list(range(1, STEPS + 1))
    np.testing.assert_allclose(
        [losses_a[s] for s in sorted(losses_a)], [losses_b[s] for s in sorted(losses_b)], atol=1e-5
    )
    state_a, state_b = _state(a, STEPS), _state(b, STEPS)
    assert int(state_a["step"]) == int(state_b["step"]) == STEPS
    # (Movement scores add up gradients: a few of them move by 1e-5, relatively 1e-3.)
    close = dict(atol=2e-5, rtol=1e-3)
    chex.assert_trees_all_close(state_a["params"], state_b["params"], **close)
    chex.assert_trees_all_close(state_a["opt_state"], state_b["opt_state"], **close)
    chex.assert_trees_all_close(state_a.get("method_state"), state_b.get("method_state"), **close)


def test_one_process_resumes_two_processes_checkpoint_and_ends_alike(tmp_path, teacher_dir):
    multi, resumed = tmp_path / "multi", tmp_path / "resumed"
    texts = _run_processes(multi, teacher_dir)  # 2 processes x 2 CPU devices, gloo
    assert "on 4 cpu devices in 2 processes; new run" in texts[0]
    assert "bertjax: " not in texts[1]  # process 1 keeps quiet; process 0 wrote the files
    assert {p.name for p in multi.iterdir()} == {
        "config.json", "checkpoints", "metrics.jsonl", "tensorboard", "results.json"
    }  # fmt: skip
    # Their checkpoint of step 3, resumed here in one process on 8 devices: steps 4-6 as
    # one process takes them end where the two processes' steps 4-6 ended.
    _keep_only_step(multi, resumed, 3)
    loop.train_and_evaluate(_config(teacher_dir), resumed)
    assert min(_losses(resumed)) == 1  # the two processes' first steps, kept
    _assert_same_run(multi, resumed)


@pytest.mark.slow
@pytest.mark.parametrize("run", [FINETUNE, MOVEMENT], ids=["finetune", "prune_movement"])
def test_two_processes_train_like_one_and_resume_its_checkpoint(tmp_path, teacher_dir, run):
    single, multi, resumed = tmp_path / "single", tmp_path / "multi", tmp_path / "resumed"
    loop.train_and_evaluate(_config(teacher_dir, run), single)  # 8 CPU devices (conftest)
    _run_processes(multi, teacher_dir, run)
    assert sorted(p.name for p in multi.iterdir()) == sorted(p.name for p in single.iterdir())
    _assert_same_run(single, multi)
    # One process's checkpoint of step 3, resumed by two processes.
    _keep_only_step(single, resumed, 3)
    texts = _run_processes(resumed, teacher_dir, run)
    assert "bertjax: resumed from step 3" in texts[0]
    _assert_same_run(single, resumed)


@pytest.mark.slow
def test_a_signal_to_one_process_stops_both_at_one_saved_step(tmp_path, teacher_dir):
    workdir = tmp_path / "run"
    # 18 steps, a checkpoint every step: time to signal mid-run.
    extra = ("--config.train.num_epochs=3", "--config.checkpoint.every_steps=1")
    processes, logs = _launch(workdir, teacher_dir, extra=extra)
    checkpoints, deadline = workdir / "checkpoints", time.time() + TIMEOUT
    while time.time() < deadline and not (checkpoints / "2").is_dir():
        assert all(process.poll() is None for process in processes)
        time.sleep(0.1)
    processes[1].send_signal(signal.SIGTERM)  # process 1 only: process 0 learns it
    texts = _wait(processes, logs, status=128 + signal.SIGTERM)
    steps = [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()]
    stopped = max(steps)
    assert 2 <= stopped < 18 and not (workdir / "results.json").exists()
    last = f"bertjax: interrupted at step {stopped}; re-run the same command to resume"
    assert [text.splitlines()[-1] for text in texts] == [last, last]
    # The rerun, in one process, resumes there and finishes.
    config = _config(teacher_dir)
    config.train.num_epochs, config.checkpoint.every_steps = 3.0, 1
    results = loop.train_and_evaluate(config, workdir)
    assert results["steps"] == 18 and min(_losses(workdir)) == 1


def test_distributed_settings_are_all_or_none():
    assert validation.distributed_problem(None, None, None) is None  # auto-detected
    assert validation.distributed_problem("127.0.0.1:1234", 2, 1) is None
    assert validation.distributed_problem("[::1]:1234", 2, 0) is None
    cases = {
        ("127.0.0.1:1234", None, None): "--num_processes, --process_id missing",
        ("127.0.0.1", 2, 0): "--coordinator_address must be HOST:PORT, got '127.0.0.1'",
        ("host:0", 2, 0): "--coordinator_address must be HOST:PORT",
        ("host:80", 0, 0): "--num_processes must be an integer >= 1, got 0",
        ("host:80", 2, 2): "--process_id must be an integer in [0, 1], got 2",
        ("host:80", 2, -1): "--process_id must be an integer in [0, 1], got -1",
    }
    for settings, message in cases.items():
        assert message in validation.distributed_problem(*settings), settings
    with pytest.raises(ValueError, match="--process_id must be"):
        distributed.initialize("127.0.0.1:1234", 2, 5)  # refused before jax is touched


def test_flags_default_to_the_environment(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "x")
    assert distributed.from_environment("num_processes") == 4
    with pytest.raises(ValueError, match=r"\$JAX_PROCESS_ID must be an integer, got 'x'"):
        distributed.from_environment("process_id")
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    assert distributed.from_environment("coordinator_address") is None


def test_one_process_agrees_with_itself():
    assert distributed.agreed_signal(None) is None and distributed.agreed_signal(15) == 15
    distributed.barrier("nothing to wait for")
