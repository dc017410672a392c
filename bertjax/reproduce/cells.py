"""Running one cell for one seed: its config, the run, its latency, and the clean-up.

A cell's workdir is `RUNS/{task}/{cell}/seed{k}`; `train_and_evaluate` resumes an
interrupted run and skips a finished one, so the whole reproduction is resumable.
Once a run has its results.json its checkpoints go (they only serve resuming; a
grid's would fill the disk); a student's export goes too once its latency is
measured — teachers' exports stay, the students of their seed start from them.
The seed-0 teacher also gets its `peers.json` (`peers.py`: PyTorch fp32 and ONNX
Runtime int8), measured on the first invocation that finds it missing.
"""

import importlib
import json
import os
import shutil
import sys
from pathlib import Path

import jax
import ml_collections

from bertjax import bench, paths
from bertjax.reproduce import peers
from bertjax.reproduce.grid import TEACHER, Budget, Cell
from bertjax.train import loop

# Where the smoke budget's random teacher gets its vocabulary.
SMOKE_TOKENIZER = "minilm-l6-h384"


def set_field(config: ml_collections.ConfigDict, path: str, value) -> None:
    """`config.a.b = value` for `path` "a.b" (the field must exist)."""
    *blocks, name = path.split(".")
    node = config
    for block in blocks:
        node = node[block]
    if name not in node:
        raise KeyError(f"config has no field {path!r}")
    node[name] = value


def workdir(runs: Path, task: str, cell: Cell, seed: int) -> Path:
    return runs / task / cell.name / f"seed{seed}"


def teacher_export(runs: Path, task: str, seed: int) -> Path:
    return runs / task / TEACHER / f"seed{seed}" / "export"


def config_for(cell: Cell, budget: Budget, task: str, seed: int, runs: Path):
    """The run config of `cell` on `task` for `seed` (its teacher: that seed's)."""
    teacher = teacher_export(runs, task, seed)
    module = importlib.import_module(f"configs.{cell.config}")
    arg = cell.args.format(teacher=teacher) + f",task={task}"
    config = module.get_config(arg + (",smoke=true" if budget.smoke else ""))
    for path, value in cell.overrides:
        set_field(config, path, value)
    config.train.seed = seed
    if budget.train_limits.get(task):
        config.data.train_limit = budget.train_limits[task]
    if cell.needs_teacher():
        config.teacher = str(teacher)
    elif budget.smoke:
        config.model.tokenizer = str(paths.models_root() / SMOKE_TOKENIZER)
    config.checkpoint.every_steps = 50
    config.checkpoint.keep = 1
    return config


def run(cell: Cell, budget: Budget, task: str, seed: int, runs: Path) -> dict:
    """The cell's results.json (training it first unless finished), with its latency
    (`latency.json`, seed 0 only: every seed has the same architecture)."""
    directory = workdir(runs, task, cell, seed)
    if cell.needs_teacher() and not teacher_export(runs, task, seed).is_dir():
        raise FileNotFoundError(f"{task} seed {seed}: no teacher export (run the teacher first)")
    results_path = directory / "results.json"
    if results_path.exists():
        results = json.loads(results_path.read_text())
    else:
        results = loop.train_and_evaluate(config_for(cell, budget, task, seed, runs), directory)
    shutil.rmtree(directory / "checkpoints", ignore_errors=True)
    latency_path = directory / "latency.json"
    if (
        budget.latency
        and seed == 0
        and not latency_path.exists()
        and (directory / "export").is_dir()
    ):
        latency_path.write_text(json.dumps(measure(directory / "export", runs, task), indent=2))
    if budget.latency and budget.peers and seed == 0 and not cell.needs_teacher():
        if peers.ensure(directory, task) is None:  # the table notes the absence too
            print(f"reproduce: {task}: no {peers.FILE}, {peers.missing_runtime()}", file=sys.stderr)
    if cell.needs_teacher():  # measured (seed 0) or not needed: students' exports go
        for name in ("export", "export_fp32"):
            shutil.rmtree(directory / name, ignore_errors=True)
    return results


def measure(export: Path, runs: Path, task: str, repeats: int = 5) -> dict:
    """Batch-1 and batch-32 latency (seq 128, best of `repeats` round-robin calls) of an
    export beside the task's seed-0 teacher in PyTorch fp32, timed in the same rounds."""
    from bertjax.bench.peers import torch_forward

    teacher = teacher_export(runs, task, 0)
    model, params = bench.load_model(export)
    out = {}
    for batch in (1, 32):
        forward = bench.make_forward(model, params, batch, 128)
        torch_run, _ = torch_forward(teacher, batch, 128)
        times = bench.interleave({"ours": forward, "torch": torch_run}, repeats=repeats)
        best = {name: 1e3 * min(values) for name, values in times.items()}
        out[f"b{batch}"] = {
            "ms": best["ours"],
            "torch_teacher_ms": best["torch"],
            "speedup_vs_torch_teacher": best["torch"] / best["ours"],
        }
    out["devices"] = jax.devices()[0].platform
    out["load_average_1min"] = os.getloadavg()[0]  # other work on the machine skews ratios
    return out
