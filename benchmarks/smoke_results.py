"""Smoke runs of every config under configs/, recorded and compared: results unchanged?

Why: issue 13 item 11. Before a refactor of the method/model interface, record the
numbers of a tiny smoke run of each config; after it, the same runs must give the
same numbers (bit-identical where the arithmetic did not change). Each run goes
through the command line (`python -m bertjax.main --config=configs/X.py:ARGS
--workdir=DIR`) in its own process, on the random `tiny` model (2 x 128, the
minilm-l6-h384 tokenizer) and 32 MRPC training / 16 dev examples of length 32,
on one CPU device. Distillation and post-training quantization start from the
`finetune` run's export (a 2-layer teacher).

From each run's results.json it keeps `method`, `metrics` and the method's own
numbers (sparsity, params, bytes, heads_kept, ...; everything but timings). The dev
metrics of 16 examples rarely move, so three finer fingerprints come along: the
training log (loss, grad norm, ... per step, from metrics.jsonl), float64 sums of
the exported weights, and `probability_loyalty` to the `finetune` model (a float of
the dev logits; the non-distillation runs get `--config.teacher`, which only adds
that evaluation).

  # before the change (commit recorded in the file's metadata)
  python benchmarks/smoke_results.py --record benchmarks/smoke_baseline.json
  # after it: re-run, print run | key | before | after | equal?, exit 1 on a difference
  python benchmarks/smoke_results.py --compare benchmarks/smoke_baseline.json
  # a few runs only; a tolerance instead of bit-identity
  python benchmarks/smoke_results.py --compare benchmarks/smoke_baseline.json \
      --only prune_movement_soft,quant_qat_w4a8 --atol 1e-6

Runs live in --workdir (default /tmp/smoke_results). A run whose results.json exists
and was made by the same code (a hash of bertjax/, methods/ and configs/) and the same
command is reused, so an interrupted recording resumes; --fresh re-runs everything.
`--record OUT --only A,B` updates those runs in an existing OUT; `--list` prints the runs.
The code under test is the checkout holding this script (PYTHONPATH is set to it).
"""

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = REPO_ROOT.parent / "shared" / "models" / "minilm-l6-h384"
TEACHER = "{workdir}/finetune/export"  # the `finetune` run's export
STAMP = "smoke_stamp.json"
# The sizes of tests/conftest.py's `shrink`.
SHRINK = (
    "--config.data.train_limit=32",
    "--config.data.eval_limit=16",
    "--config.data.max_seq_length=32",
    "--config.train.batch_size=8",
    "--config.train.eval_batch_size=8",
)
# Timing fields of results.json and metrics.jsonl: never compared.
TIMING_WORDS = ("seconds", "per_second")


@dataclasses.dataclass(frozen=True)
class Run:
    """One smoke run: `python -m bertjax.main --config=configs/{config}.py:{arg},smoke=True`."""

    name: str
    config: str
    arg: str
    overrides: tuple[str, ...] = ()
    tiny: bool = True  # the model is the random `tiny` size: give it a tokenizer
    # --config.teacher=TEACHER: results.json then has `probability_loyalty`, a float of the
    # dev logits, finer than the metrics (16 examples); it does not change the run itself.
    loyalty: bool = True

    @property
    def needs_teacher(self) -> bool:
        return "{teacher}" in self.arg or self.loyalty

    def command(self, workdir: Path) -> list[str]:
        teacher = TEACHER.format(workdir=workdir)
        arg = self.arg.format(teacher=teacher)
        tokenizer = (f"--config.model.tokenizer={TOKENIZER}",) if self.tiny else ()
        loyalty = (f"--config.teacher={teacher}",) if self.loyalty else ()
        return [
            sys.executable,
            "-m",
            "bertjax.main",
            f"--config=configs/{self.config}.py:{arg},task=mrpc,smoke=True",
            f"--workdir={workdir / self.name}",
            *tokenizer,
            *SHRINK,
            *loyalty,
            *self.overrides,
        ]


def _distill(name: str, config: str, arg: str, *overrides: str) -> Run:
    return Run(name, config, f"{arg},teacher={{teacher}}", overrides, tiny=False, loyalty=False)


def _magnitude(scope: str, gradual: bool) -> Run:
    name = f"prune_magnitude_{scope}_{'gradual' if gradual else 'oneshot'}"
    return Run(name, "prune_magnitude", f"model=tiny,scope={scope},gradual={gradual}")


def _ptq(name: str, arg: str) -> Run:
    return Run(name, "quant_ptq", f"model={{teacher}},{arg},batches=4", tiny=False)


RUNS = (
    # First: its export is the teacher of the distillation runs and the model of PTQ.
    Run("finetune", "finetune", "model=tiny", loyalty=False),
    Run("bitfit", "bitfit", "model=tiny"),
    Run("layer_drop_top1", "layer_drop", "model=tiny,drop=1,strategy=top"),
    Run("layer_drop_bottom1", "layer_drop", "model=tiny,drop=1,strategy=bottom"),
    Run("layer_drop_contribution1", "layer_drop", "model=tiny,drop=1,strategy=contribution"),
    *(_magnitude(scope, gradual) for scope in ("layer", "global") for gradual in (True, False)),
    Run(
        "prune_magnitude_nm",
        "prune_magnitude",
        "model=tiny,gradual=False",
        ("--config.prune.scope=n:m",),
    ),
    Run("prune_movement_hard_sum", "prune_movement", "model=tiny,movement=hard,scores=sum"),
    Run("prune_movement_hard_adam", "prune_movement", "model=tiny,movement=hard,scores=adam"),
    Run("prune_movement_soft", "prune_movement", "model=tiny,movement=soft"),
    Run("prune_structured_gradient", "prune_structured", "model=tiny,importance=gradient"),
    Run("prune_structured_weight_norm", "prune_structured", "model=tiny,importance=weight_norm"),
    Run(
        "prune_structured_weight_norm_global",
        "prune_structured",
        "model=tiny,importance=weight_norm,scope=global",
    ),
    Run("quant_qat_w8a8_ema", "quant_qat", "model=tiny,wbits=8,abits=8,ranges=ema"),
    Run("quant_qat_w8a8_dynamic", "quant_qat", "model=tiny,wbits=8,abits=8,ranges=dynamic"),
    Run("quant_qat_w4a8", "quant_qat", "model=tiny,wbits=4,abits=8"),
    Run("quant_qat_w8a0", "quant_qat", "model=tiny,wbits=8,abits=0"),
    _ptq("quant_ptq_minmax", "calibration=minmax"),
    _ptq("quant_ptq_percentile", "calibration=percentile"),
    _ptq("quant_ptq_mse", "calibration=mse"),
    _ptq("quant_ptq_w4a8_minmax", "wbits=4,calibration=minmax"),
    _ptq("quant_ptq_int8", "int8=True"),
    _distill("distill_kd_soft_ce", "distill_kd", "student=teacher:1"),
    _distill("distill_kd_mse", "distill_kd", "student=teacher:1,kind=mse"),
    _distill(
        "distill_kd_cached",
        "distill_kd",
        "student=teacher:1",
        "--config.distill.cache_teacher=True",
    ),
    _distill("distill_kd_random_student", "distill_kd", "student=tiny"),
    _distill("distill_tinybert_uniform", "distill_tinybert", "student=teacher:1,map=uniform"),
    _distill("distill_tinybert_random_top", "distill_tinybert", "student=tiny,map=top"),
    _distill("distill_emd", "distill_emd", "student=teacher:1"),
    _distill("distill_theseus_linear", "distill_theseus", "successors=1,schedule=linear"),
    _distill("distill_theseus_constant", "distill_theseus", "successors=1,schedule=constant"),
)


def code_hash() -> str:
    """sha256 of the Python sources of bertjax/, methods/ and configs/ (paths and bytes)."""
    digest = hashlib.sha256()
    for package in ("bertjax", "methods", "configs"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def git_commit() -> dict:
    """HEAD's commit and whether tracked files differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def environment(workdir: Path) -> dict[str, str]:
    """The subprocesses' environment: one CPU device, offline, caches under `workdir`."""
    env = dict(os.environ)
    env.update(
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        JAX_PLATFORMS="cpu",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        BERTJAX_CACHE=str(workdir / "cache"),
        PYTHONPATH=str(REPO_ROOT),
        TQDM_DISABLE="1",
    )
    return env


def _is_timing(key: str) -> bool:
    return any(word in key for word in TIMING_WORDS)


def _training_log(path: Path) -> dict[str, list]:
    """metrics.jsonl as `{field: [value per logged line]}` plus `steps` (timings dropped)."""
    log: dict[str, list] = {}
    if not path.is_file():
        return log
    for line in path.read_text().splitlines():
        values = json.loads(line)
        for key, value in values.items():
            if not _is_timing(key):
                log.setdefault("steps" if key == "step" else key, []).append(value)
    return log


def _export_sums(directory: Path) -> dict:
    """Float64 sum and |.|-sum of every exported tensor (sorted by name), and their count."""
    path = directory / "model.safetensors"
    if not path.is_file():
        return {}
    import numpy as np
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    total = absolute = 0.0
    for name in sorted(tensors):
        values = tensors[name].astype(np.float64)
        total += float(values.sum())
        absolute += float(np.abs(values).sum())
    return {"tensors": len(tensors), "sum": total, "abs_sum": absolute}


def collect(rundir: Path, workdir: Path) -> dict:
    """The comparable numbers of one finished run."""
    results = json.loads((rundir / "results.json").read_text())
    kept = {}
    for key, value in results.items():
        if _is_timing(key):
            continue
        if isinstance(value, str):  # paths (model, teacher) differ only by --workdir
            value = value.replace(str(workdir), "$WORKDIR")
        kept[key] = value
    return {
        "results": kept,
        "log": _training_log(rundir / "metrics.jsonl"),
        "export": _export_sums(rundir / "export"),
    }


def run_one(run: Run, workdir: Path, fresh: bool, code: str) -> dict:
    """Runs `run` (or reuses its finished directory) and collects its numbers."""
    rundir = workdir / run.name
    command = run.command(workdir)
    stamp = {"code": code, "command": command[1:]}
    stamp_path = rundir / STAMP
    reuse = (
        not fresh
        and (rundir / "results.json").is_file()
        and stamp_path.is_file()
        and json.loads(stamp_path.read_text()) == stamp
    )
    record = {"command": " ".join(["python", *command[1:]])}
    if reuse:
        print(f"{run.name}: reusing {rundir}", flush=True)
        return {**record, "wall_seconds": None, **collect(rundir, workdir)}
    # A half-finished directory would resume from its checkpoint: start clean.
    shutil.rmtree(rundir, ignore_errors=True)
    rundir.mkdir(parents=True)
    print(f"{run.name}: {' '.join(command[2:4])}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=environment(workdir), capture_output=True, text=True
    )
    seconds = round(time.perf_counter() - start, 1)
    (rundir / "stdout.txt").write_text(done.stdout)
    (rundir / "stderr.txt").write_text(done.stderr)
    if done.returncode != 0 or not (rundir / "results.json").is_file():
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        error = lines[-1] if lines else f"exit status {done.returncode}"
        print(f"  FAILED ({done.returncode}) after {seconds} s: {error}", flush=True)
        return {**record, "wall_seconds": seconds, "error": error}
    stamp_path.write_text(json.dumps(stamp, indent=1) + "\n")
    last = done.stdout.strip().splitlines()[-1:] or [""]
    print(f"  {seconds} s  {last[0]}", flush=True)
    return {**record, "wall_seconds": seconds, **collect(rundir, workdir)}


def run_all(names: list[str] | None, workdir: Path, fresh: bool) -> tuple[dict, float]:
    """`({name: record}, wall seconds)` of the selected runs (with `finetune` if they need it)."""
    selected = [run for run in RUNS if names is None or run.name in names]
    unknown = set(names or ()) - {run.name for run in RUNS}
    if unknown:
        raise SystemExit(f"unknown runs {sorted(unknown)}; known: {[run.name for run in RUNS]}")
    if any(run.needs_teacher for run in selected) and RUNS[0] not in selected:
        # A reused `finetune` directory is fine: only a missing or stale one is re-run.
        selected.insert(0, RUNS[0])
    uncovered = sorted(
        path.stem
        for path in (REPO_ROOT / "configs").glob("*.py")
        if path.stem != "__init__" and path.stem not in {run.config for run in RUNS}
    )
    if uncovered and names is None:
        print(f"WARNING: configs without a smoke run here: {uncovered}", flush=True)
    workdir.mkdir(parents=True, exist_ok=True)
    code, start, records = code_hash(), time.perf_counter(), {}
    for run in selected:
        records[run.name] = run_one(run, workdir, fresh, code)
        if run is RUNS[0] and "error" in records[run.name]:
            print("finetune failed: the teacher-dependent runs will fail too", flush=True)
    return records, round(time.perf_counter() - start, 1)


def flatten(record: dict) -> dict:
    """`{dotted key: leaf}` of a record's compared parts (lists are leaves)."""
    flat = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), child)
        else:
            flat[prefix] = value

    if "error" in record:
        return {"error": record["error"]}
    walk("", {key: record[key] for key in ("results", "log", "export")})
    # `results.` is implied: the keys read as in results.json.
    return {key.removeprefix("results."): value for key, value in flat.items()}


def agreement(before, after, atol: float) -> str:
    """ "identical", "close" (every number within `atol`) or "DIFFERS"."""

    def same(a, b) -> bool:
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        return type(a) is type(b) and a == b

    def close(a, b) -> bool:
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
        numbers = (int, float)
        if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
            return same(a, b) or abs(a - b) <= atol
        return same(a, b)

    if same(before, after):
        return "identical"
    return "close" if close(before, after) else "DIFFERS"


def max_difference(before, after) -> float | None:
    """max |before - after| over matching numbers (lists elementwise); None if not numbers."""
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        parts = [max_difference(x, y) for x, y in zip(before, after, strict=True)]
        return None if not parts or None in parts else max(parts, default=0.0)
    numbers = (int, float)
    if isinstance(before, numbers) and isinstance(after, numbers):
        return abs(float(before) - float(after))
    return None


def _show(value, width: int = 44) -> str:
    text = "-" if value is None else json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def compare(baseline: dict, records: dict, atol: float, changed_only: bool) -> bool:
    """Prints the table and the per-run summary; True when every run agrees within `atol`."""
    rows, verdicts = [], {}
    for name, record in records.items():
        if name not in baseline["runs"]:
            verdicts[name] = "new"
            continue
        before, after = flatten(baseline["runs"][name]), flatten(record)
        states = []
        for key in sorted(before.keys() | after.keys()):
            if key not in after:
                state = "MISSING"
            elif key not in before:
                state = "new key"
            else:
                state = agreement(before[key], after[key], atol)
            states.append(state)
            gap = max_difference(before.get(key), after.get(key))
            if state in ("close", "DIFFERS") and gap is not None:
                state = f"{state} (max |d| {gap:.3g})"
            if not changed_only or state != "identical":
                rows.append((name, key, _show(before.get(key)), _show(after.get(key)), state))
        if all(state in ("identical", "new key") for state in states):
            verdicts[name] = "bit-identical"
        elif all(state in ("identical", "new key", "close") for state in states):
            verdicts[name] = f"within atol={atol}"
        else:
            verdicts[name] = "DIFFERS"
    if len(records) == len(RUNS):  # a full re-run: a baseline run no longer made is a difference
        for name in baseline["runs"].keys() - records.keys():
            verdicts[name] = "DIFFERS"
            rows.append((name, "(run)", "recorded", "-", "MISSING"))
    headers = ("run", "key", "before", "after", "equal?")
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(5)]
    for row in [headers, tuple("-" * width for width in widths), *rows]:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()
    for verdict in ("bit-identical", f"within atol={atol}", "DIFFERS", "new"):
        names = [name for name, value in verdicts.items() if value == verdict]
        if names:
            print(f"{verdict} ({len(names)}): {', '.join(names)}")
    return all(verdict in ("bit-identical", f"within atol={atol}") for verdict in verdicts.values())


def metadata(workdir: Path, wall_seconds: float) -> dict:
    import jax  # the versions only; the runs happen in subprocesses

    return {
        **git_commit(),
        "code_sha256": code_hash(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "devices": "1 CPU (--xla_force_host_platform_device_count=1, JAX_PLATFORMS=cpu)",
        "workdir": str(workdir),
        "wall_seconds": wall_seconds,
        "shrink": list(SHRINK),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--record", type=Path, metavar="OUT.json", help="write the runs' numbers")
    mode.add_argument("--compare", type=Path, metavar="BASELINE.json", help="re-run and compare")
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/smoke_results"))
    parser.add_argument("--fresh", action="store_true", help="re-run even finished runs")
    parser.add_argument("--atol", type=float, default=0.0, help="allowed |before - after|")
    parser.add_argument("--changed-only", action="store_true", help="table rows that differ")
    parser.add_argument("--list", action="store_true", help="print the run names and commands")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    if args.list:
        for run in RUNS:
            print(f"{run.name}: {' '.join(run.command(workdir)[3:])}")
        return
    if not (args.record or args.compare):
        parser.error("one of --record, --compare (or --list) is required")
    names = [name for name in args.only.split(",") if name] or None
    baseline = json.loads(args.compare.read_text()) if args.compare else None
    records, wall_seconds = run_all(names, workdir, args.fresh)
    failed = [name for name, record in records.items() if "error" in record]
    print(f"{len(records)} runs in {wall_seconds} s; failed: {failed or 'none'}\n")
    if args.record:
        old = json.loads(args.record.read_text()) if names and args.record.is_file() else {}
        known = {run.name for run in RUNS}
        runs = {k: v for k, v in {**old.get("runs", {}), **records}.items() if k in known}
        out = {"metadata": metadata(workdir, wall_seconds), "runs": runs}
        out["metadata"]["updated_runs"] = sorted(records) if names else "all"
        args.record.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.record} ({len(runs)} runs)")
        sys.exit(1 if failed else 0)
    after = workdir / "compare_after.json"
    after.write_text(json.dumps({"metadata": metadata(workdir, wall_seconds), "runs": records}))
    print(f"baseline: {args.compare}, commit {baseline['metadata'].get('commit', '?')[:12]}")
    sys.exit(0 if compare(baseline, records, args.atol, args.changed_only) else 1)


if __name__ == "__main__":
    main()
