"""A run's working directory belongs to one config: resume it, skip it, or refuse.

Why: re-running a finished run with another learning rate used to resume from
its checkpoint and overwrite `config.json`, silently mixing two runs. Now a
workdir that holds a run (a checkpoint or results.json) is

- resumed when the requested config equals its `config.json`, except for fields
  that cannot change the result (`NEUTRAL_FIELDS`);
- skipped when that run is finished (results.json): its results are returned;
- refused otherwise, with one line naming the differing fields and the way out
  (`--overwrite`, which removes the run's outputs first, or a new workdir).
"""

import json
import shutil
from pathlib import Path
from typing import Any

from ml_collections import ConfigDict

from bertjax.train.teacher import CACHE_FILE

# What a run writes into its workdir (`--overwrite` removes these, nothing else).
RUN_OUTPUTS = (
    "config.json",
    "checkpoints",
    "metrics.jsonl",
    "tensorboard",
    "results.json",
    "export",
    "export_fp32",
    CACHE_FILE,
    "projection.npz",  # general distillation's projection (bertjax.pretrain.general)
)
# Fields that change how often a run logs, evaluates on the way or saves, not its result;
# and `smoke`, a label (what smoke mode changes is in the other fields; runs saved before
# the label existed lack it).
NEUTRAL_FIELDS = (
    "checkpoint.every_steps",
    "checkpoint.keep",
    "train.log_every_steps",
    "train.eval_every_epochs",
    "train.compile_ahead",
    "train.eval_every_steps",
    # General distillation cut to a time budget (the schedule is num_steps'): how far a run
    # goes, like an interruption; a run stopped so is finished and is not continued.
    "train.stop_after_steps",
    "smoke",
)
# Fields a run fills in itself when left empty (contribution layer dropping measures its
# layers; config.json holds the measured ones): compared only when the request sets them.
RESOLVED_FIELDS = ("layer_drop.layers",)
# Fields added after runs were saved, with the value those runs had: equal to it, a
# field that the saved config.json lacks is no difference.
ADDED_FIELDS = {"precision.compute": "fp32", "data.bucket_multiple": 32}
SHOWN_DIFFERENCES = 4


def config_json(config: ConfigDict) -> dict:
    """`config` as config.json holds it (tuples as lists)."""
    return json.loads(config.to_json_best_effort())


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """`{"train.batch_size": 32, ...}`: the leaves of nested dicts by dotted path."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def differences(saved: dict, requested: dict) -> list[tuple[str, Any, Any]]:
    """`(field, saved value, requested value)` of every field that differs and matters,
    sorted by field; a field only one side has differs from None."""
    saved, requested = flatten(saved), flatten(requested)
    found = []
    for field in sorted(set(saved) | set(requested)):
        old, new = saved.get(field), requested.get(field)
        if old == new or field in NEUTRAL_FIELDS:
            continue
        if field in RESOLVED_FIELDS and not new:
            continue
        if field not in saved and ADDED_FIELDS.get(field, object()) == new:
            continue
        found.append((field, old, new))
    return found


def describe(found: list[tuple[str, Any, Any]]) -> str:
    """`train.learning_rate 0.0001 -> 5e-05, ...` (the first few, then how many more)."""
    shown = [f"{field} {old!r} -> {new!r}" for field, old, new in found[:SHOWN_DIFFERENCES]]
    more = len(found) - SHOWN_DIFFERENCES
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def holds_run(workdir: Path) -> bool:
    """Whether `workdir` holds something a new run would resume or mix with."""
    checkpoints = workdir / "checkpoints"
    has_checkpoint = checkpoints.is_dir() and any(checkpoints.iterdir())
    return has_checkpoint or (workdir / "results.json").is_file()


def clear(workdir: Path) -> None:
    """Removes the outputs of a run (`RUN_OUTPUTS`) from `workdir`; other files stay."""
    for name in RUN_OUTPUTS:
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)  # (every host of a multi-host run clears)
        else:
            path.unlink(missing_ok=True)


def prepare(workdir: str | Path, config: ConfigDict, *, overwrite: bool = False) -> dict | None:
    """Checks `workdir` against `config` before anything loads.

    Returns the saved results of a finished run of the same config (nothing to
    do), else None (start, or resume the checkpoint). Raises ValueError when the
    workdir holds a run of another config; `overwrite` clears it instead.
    """
    workdir = Path(workdir)
    if overwrite:
        clear(workdir)
        return None
    saved_path, results_path = workdir / "config.json", workdir / "results.json"
    if not holds_run(workdir) or not saved_path.is_file():
        return None  # nothing to mix with (or a run from before config.json was compared)
    found = differences(json.loads(saved_path.read_text()), config_json(config))
    if found:
        raise ValueError(
            f"workdir {workdir} holds a run of another config ({describe(found)}): "
            "pass --overwrite to replace it, or use a new --workdir"
        )
    if results_path.is_file():
        return json.loads(results_path.read_text())
    return None
