"""Running one cell for one seed: its config, the run, its latency, and the clean-up.

A cell's workdir is `RUNS/{task}/{cell}/seed{k}`; `train_and_evaluate` resumes an
interrupted run and skips a finished one, so the whole reproduction is resumable.
Once a run has its results.json its checkpoints go (they only serve resuming; a
grid's would fill the disk); a student's export goes too once its latency is
measured — teachers' exports stay, the students of their seed start from them, and so
do those of the cells another cell starts from (`grid.starts`).
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


def start_export(runs: Path, task: str, cell: Cell, seed: int) -> Path | None:
    """The export `cell` starts from (its `start` cell's, same seed), or None."""
    return runs / task / cell.start / f"seed{seed}" / "export" if cell.start else None


def config_for(cell: Cell, budget: Budget, task: str, seed: int, runs: Path):
    """The run config of `cell` on `task` for `seed` (its teacher: that seed's)."""
    teacher = teacher_export(runs, task, seed)
    module = importlib.import_module(f"configs.{cell.config}")
    start = start_export(runs, task, cell, seed)
    arg = cell.args.format(teacher=teacher, start=start) + f",task={task}"
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


# Latency is timed only on an otherwise idle machine: above this 1-minute load average
# (a finished run's own threads still count for a minute) the timing waits, the export
# stays, and a later cell or `--latency-only` measures it (`measure_pending`).
MAX_LOAD = 3.0


def quiet(max_load: float) -> bool:
    return os.getloadavg()[0] <= max_load


def run(cell: Cell, budget: Budget, task: str, seed: int, runs: Path,
        max_load: float = MAX_LOAD, keep_export: bool = False) -> dict:  # fmt: skip
    """The cell's results.json (training it first unless finished), with its latency
    (`latency.json`, seed 0 only: every seed has the same architecture) when the machine
    is quiet enough to time it. `keep_export`: another cell starts from this one."""
    directory = workdir(runs, task, cell, seed)
    results_path = directory / "results.json"
    if (cell.needs_teacher() and not results_path.exists()
            and not teacher_export(runs, task, seed).is_dir()):  # fmt: skip
        raise FileNotFoundError(f"{task} seed {seed}: no teacher export (run the teacher first)")
    start = start_export(runs, task, cell, seed)
    if start and not start.is_dir() and not results_path.exists():
        raise FileNotFoundError(
            f"{task} seed {seed}: {cell.name} starts from {cell.start}, which has no export "
            f"at {start} (a finished run whose export was deleted: remove {start.parent} "
            "to rerun it)"
        )
    if results_path.exists():
        results = json.loads(results_path.read_text())
    else:
        results = loop.train_and_evaluate(config_for(cell, budget, task, seed, runs), directory)
    shutil.rmtree(directory / "checkpoints", ignore_errors=True)
    if seed == 0:
        measure_pending(cell, budget, task, runs, max_load, keep_export)
    elif not _keeps_export(cell, keep_export):  # only seed 0 is timed
        _drop_exports(directory)
    return results


def _keeps_export(cell: Cell, keep_export: bool) -> bool:
    """Whether a finished cell's export stays: a teacher's (its students start from it)
    or one another cell starts from; a student's goes once timed."""
    return keep_export or not cell.needs_teacher()


def measure_pending(cell: Cell, budget: Budget, task: str, runs: Path, max_load: float,
                    keep_export: bool = False) -> bool:  # fmt: skip
    """Times seed 0 of a finished `cell` if it is not yet (latency.json; the teacher's
    peers.json too) and the load is at most `max_load`; a student's export goes once
    timed (unless `keep_export`). Returns whether nothing is left pending."""
    directory = workdir(runs, task, cell, 0)
    export = directory / "export"
    latency_path = directory / "latency.json"
    wants_latency = budget.latency and export.is_dir() and not latency_path.exists()
    wants_peers = (
        budget.latency and budget.peers and not cell.needs_teacher()
        and not (directory / peers.FILE).exists() and peers.missing_runtime() is None
    )  # fmt: skip
    if (wants_latency or wants_peers) and not quiet(max_load):
        load = os.getloadavg()[0]
        print(f"reproduce: {task}/{cell.name}: timing deferred (load {load:.1f} > "
              f"{max_load:g}); the export stays until it is timed", file=sys.stderr)  # fmt: skip
        return False
    if wants_latency:
        measured = measure(export, runs, task)
        if measured.get("load_average_1min", 0.0) > max_load:  # busy by the end of the timing
            print(f"reproduce: {task}/{cell.name}: timing discarded (load rose to "
                  f"{measured['load_average_1min']:.1f}); the export stays until it is timed",
                  file=sys.stderr)  # fmt: skip
            return False
        latency_path.write_text(json.dumps(measured, indent=2))
    if budget.latency and budget.peers and not cell.needs_teacher():
        if peers.ensure(directory, task) is None:  # the table notes the absence too
            print(f"reproduce: {task}: no {peers.FILE}, {peers.missing_runtime()}", file=sys.stderr)
    if not _keeps_export(cell, keep_export):  # timed, or never to be
        _drop_exports(directory)
    return True


def _drop_exports(directory: Path) -> None:
    for name in ("export", "export_fp32"):
        shutil.rmtree(directory / name, ignore_errors=True)


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
        best = bench.best_ms({"ours": forward, "torch": torch_run}, repeats=repeats)
        out[f"b{batch}"] = {
            "ms": best["ours"],
            "torch_teacher_ms": best["torch"],
            "speedup_vs_torch_teacher": best["torch"] / best["ours"],
        }
    out["devices"] = jax.devices()[0].platform
    out["load_average_1min"] = os.getloadavg()[0]  # other work on the machine skews ratios
    return out
