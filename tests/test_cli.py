"""`python -m bertjax.main` as a user meets it: help, one-line errors, exit statuses.

Every invocation here stops before a model loads, so all of them run in one
subprocess (`DRIVER`: `bertjax.main.run` per command line, flags reset in between,
stdout / stderr / exit status recorded), paying jax's import once.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configs import finetune

REPO = Path(__file__).resolve().parents[1]

DRIVER = """
import contextlib, io, json, sys
from bertjax import main

records = []
for argv in json.loads(sys.argv[1]):
    for name in [name for name in main.FLAGS if name.startswith("config.")]:
        delattr(main.FLAGS, name)  # the config's override flags, defined per parse
    main.FLAGS.unparse_flags()
    sys.argv = argv  # config_flags reads its overrides from sys.argv
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main.run(argv)
            status = 0
        except SystemExit as exit:
            status = exit.code
    records.append({"status": status, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(records))
"""

FINETUNE = "--config=configs/finetune.py:model=tiny,task=rte,smoke=True"


@pytest.fixture
def finished(tmp_path, teacher_dir):
    """A workdir as a finished smoke run of `FINETUNE` leaves it."""
    workdir = tmp_path / "finished"
    config = finetune.get_config("model=tiny,task=rte,smoke=True")
    config.model.tokenizer = str(teacher_dir)
    (workdir / "checkpoints" / "4").mkdir(parents=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
    results = {"task": "rte", "metrics": {"accuracy": 0.5}, "smoke": True}
    (workdir / "results.json").write_text(json.dumps(results))
    return workdir


def _commands(tmp_path, teacher_dir, finished):
    """{name: (argv, exit status, expected)}: `expected` is the exact last stderr line for
    errors, else a text that stdout must contain."""
    workdir = f"--workdir={tmp_path / 'w'}"
    tokenizer = f"--config.model.tokenizer={teacher_dir}"

    def error(argv, line):
        return ["bertjax.main", *argv], 2, f"bertjax: error: {line}"

    return {
        "help": (["bertjax.main", "--help"], 0, "configs (--config=configs/NAME.py"),
        "-h": (["bertjax.main", "-h"], 0, "tasks (task=NAME): cola, sst2"),
        "helpfull": (["bertjax.main", "--helpfull"], 0, "random sizes"),
        "config help": (
            ["bertjax.main", "--config=configs/prune_magnitude.py:sparsity=0.7", "--help"],
            0,
            "  sparsity: 0.7\n",
        ),
        "print_config": (
            ["bertjax.main", "--config=configs/finetune.py:smoke=false", "--print_config"],
            0,
            "smoke: false\n",
        ),
        "smoke=Ture": error(
            ["--config=configs/finetune.py:smoke=Ture", workdir],
            "bad command line: config argument smoke=Ture: must be true or false",
        ),
        "smoke=no": error(
            ["--config=configs/finetune.py:smoke=no", workdir],
            "bad command line: config argument smoke=no: must be true or false",
        ),
        "batch 0": error(
            [FINETUNE, workdir, "--config.train.batch_size=0"],
            "config.train.batch_size must be an integer >= 1, got 0",
        ),
        "batch -8": error(
            [FINETUNE, workdir, "--config.train.batch_size=-8"],
            "config.train.batch_size must be an integer >= 1, got -8",
        ),
        "sparsity=70": error(
            ["--config=configs/prune_magnitude.py:sparsity=70", workdir],
            "config.prune.sparsity must be in [0, 1), got 70.0",
        ),
        "unknown flag": error(
            [FINETUNE, workdir, "--help2"], "bad command line: Unknown command line flag 'help2'"
        ),
        "mistyped field": error(
            [FINETUNE, workdir, "--config.train.learnin_rate=1"],
            "bad command line: 'learnin_rate' Did you mean \"learning_rate\" instead of "
            '"learnin_rate"?',
        ),
        "unknown task": error(
            [FINETUNE, workdir, "--config.task=nosuchtask"],
            "config.task must be a GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, "
            "wnli), got 'nosuchtask'",
        ),
        "missing data": error(
            [FINETUNE, workdir, "--config.data.root=/nonexistent/data"],
            "config.data.root must be an existing directory, got '/nonexistent/data'",
        ),
        "missing model": error(
            [FINETUNE, workdir, "--config.model.name=no-such-model"],
            "model 'no-such-model': not a directory, not in $BERTJAX_MODELS",
        ),
        "missing teacher": error(
            ["--config=configs/distill_kd.py:student=tiny,teacher=/no/teacher", workdir],
            "teacher '/no/teacher': not a directory, not in $BERTJAX_MODELS",
        ),
        "half distributed": error(
            [FINETUNE, workdir, "--num_processes=2"],
            "--coordinator_address, --process_id missing: give all three of "
            "coordinator_address, num_processes, process_id, or none",
        ),
        "process id": error(
            [
                FINETUNE,
                workdir,
                "--coordinator_address=127.0.0.1:1",
                "--num_processes=2",
                "--process_id=2",
            ],
            "--process_id must be an integer in [0, 1], got 2",
        ),  # fmt: skip
        "no workdir": error(
            [FINETUNE], "--workdir is required (where checkpoints, logs and results go)"
        ),
        "finished": (
            ["bertjax.main", FINETUNE, f"--workdir={finished}", tokenizer],
            0,
            "accuracy=0.5000 (smoke run: tiny data, checks that it runs; not a result)\n",
        ),
        "other config": error(
            [FINETUNE, f"--workdir={finished}", tokenizer, "--config.train.learning_rate=5e-5"],
            f"workdir {finished} holds a run of another config (train.learning_rate 0.0001 -> "
            "5e-05): pass --overwrite to replace it, or use a new --workdir",
        ),
    }


def test_cli_help_errors_and_workdir_checks(tmp_path, teacher_dir, finished):
    commands = _commands(tmp_path, teacher_dir, finished)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps([argv for argv, _, _ in commands.values()])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = dict(zip(commands, json.loads(done.stdout.splitlines()[-1]), strict=True))
    for name, (_, status, expected) in commands.items():
        record = records[name]
        assert record["status"] == status, (name, record)
        if status:
            last = record["stderr"].splitlines()[-1]
            assert last.startswith(expected) if name.startswith("missing") else last == expected
            assert "Traceback" not in record["stderr"], name
        else:
            assert expected in record["stdout"], (name, record)
    # --help lists every config under configs/ (and -h, --helpfull say the same).
    configs = sorted(p.stem for p in (REPO / "configs").glob("*.py") if p.stem != "__init__")
    assert all(f"\n  {name} " in records["help"]["stdout"] for name in configs)
    assert records["-h"]["stdout"] == records["helpfull"]["stdout"] == records["help"]["stdout"]
    for flag in ("--distributed", "--coordinator_address", "--num_processes", "--process_id"):
        assert f"\n  {flag} " in records["help"]["stdout"], flag
    assert "train_limit: 0" in records["print_config"]["stdout"]  # smoke=false is off
    # A finished run of the same config says so and skips; nothing was overwritten.
    assert records["finished"]["stderr"].splitlines()[-1] == (
        f"bertjax: {finished} holds this run, finished (results.json): nothing to do"
    )
    assert json.loads((finished / "config.json").read_text())["train"]["learning_rate"] == 1e-4
