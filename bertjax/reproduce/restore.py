"""Bringing finished runs back from a committed `results.json` when the runs directory is gone.

The runs directory lives on one machine; the tables (`reproduction/<budget>/results.json`)
are committed. On a new machine a reproduction would otherwise retrain every finished cell.
`restore` writes each committed run's results.json (and seed 0's latency.json and
peers.json) back into its workdir, so the grid skips it, except for the runs whose export a
not-yet-finished run still needs (its teacher, or the cell it starts from): those are left
out and retrained, and so, transitively, is what they need.
"""

import json
from pathlib import Path

from bertjax.reproduce import peers
from bertjax.reproduce.cells import workdir
from bertjax.reproduce.grid import TASKS, Cell


def _by_seed(records: list[dict]) -> dict[int, dict]:
    """Seed -> record; records without a `seed` (older tables) are in seed order."""
    return {record.get("seed", position): record for position, record in enumerate(records)}


def _directory(runs: Path, by_name: dict, key: tuple) -> Path:
    task, name, seed = key
    return workdir(runs, task, by_name[name], seed)


def plan(committed: dict, runs: Path, tasks, cells: list[Cell], seeds: int) -> dict:
    """`{(task, cell, seed): record}` of the committed runs to restore: those whose workdir has
    no results.json and whose export no unfinished run needs (or whose export is still there)."""
    by_name = {cell.name: cell for cell in cells}
    keys = [(t, c.name, s) for t in tasks for c in cells for s in range(seeds)]
    on_disk = {k for k in keys if (_directory(runs, by_name, k) / "results.json").exists()}
    records = {}
    for task in tasks:
        for name, per_seed in committed.get(task, {}).items():
            for seed, record in _by_seed(per_seed).items():
                if name in by_name and seed < seeds and (task, name, seed) not in on_disk:
                    records[(task, name, seed)] = record

    retrain = _retrain(runs, by_name, keys, on_disk | set(records))
    return {key: record for key, record in records.items() if key not in retrain}


def restore(committed: dict, runs: Path, tasks, cells: list[Cell], seeds: int) -> int:
    """Writes the runs `plan` picks back into `runs`; returns how many."""
    by_name = {cell.name: cell for cell in cells}
    chosen = plan(committed, runs, tasks, cells, seeds)
    for key, record in chosen.items():
        record = dict(record)
        directory = _directory(runs, by_name, key)
        directory.mkdir(parents=True, exist_ok=True)
        latency, peer = record.pop("latency", None), record.pop("peers", None)
        if latency is not None:
            (directory / "latency.json").write_text(json.dumps(latency, indent=2))
        if peer is not None:
            (directory / peers.FILE).write_text(json.dumps(peer, indent=2))
        (directory / "results.json").write_text(json.dumps(record, indent=2))
    return len(chosen)


def reopen(runs: Path, tasks, cells: list[Cell], seeds: int) -> list[Path]:
    """Finished runs without an export that an unfinished run needs (restored before a
    cell starting from them was added to the grid): their results.json is moved aside
    (`results.reopened.json`) so that they retrain, transitively. Returns their workdirs.
    Nothing is lost: the committed table keeps their records meanwhile (`merge`)."""
    by_name = {cell.name: cell for cell in cells}
    keys = [(t, c.name, s) for t in tasks for c in cells for s in range(seeds)]
    on_disk = {k for k in keys if (_directory(runs, by_name, k) / "results.json").exists()}
    reopened = []
    for key in sorted(_retrain(runs, by_name, keys, on_disk)):
        results = _directory(runs, by_name, key) / "results.json"
        results.replace(results.with_name("results.reopened.json"))
        reopened.append(results.parent)
    return reopened


def _retrain(runs: Path, by_name: dict, keys, finished: set) -> set:
    """The `finished` runs to train again: those without an export that an unfinished run
    needs, and transitively what those need (`Cell.needs`)."""
    unfinished, retrain = set(keys) - finished, set()
    while True:
        needed = {(task, dep, seed) for task, name, seed in unfinished
                  for dep in by_name[name].needs()}  # fmt: skip
        stale = {key for key in needed & (finished - retrain)
                 if not (_directory(runs, by_name, key) / "export").is_dir()}  # fmt: skip
        if not stale:
            return retrain
        retrain |= stale
        unfinished |= stale


def merge(collected: dict, committed: dict) -> dict:
    """`collected` (what is on disk) with the committed runs not yet back on disk (those
    waiting to be retrained, and those of tasks or cells this run leaves out), so that a
    table written meanwhile loses none of them."""
    out = {}
    tasks = [t for t in TASKS if t in collected or t in committed]
    for task in tasks:
        found = collected.get(task, {})
        out[task] = {}
        for name in dict.fromkeys([*committed.get(task, {}), *found]):
            per_seed = {**_by_seed(committed.get(task, {}).get(name, [])),
                        **_by_seed(found.get(name, []))}  # fmt: skip
            out[task][name] = [{**per_seed[seed], "seed": seed} for seed in sorted(per_seed)]
    return out


def load(path: Path) -> dict:
    """The `runs` of a committed results.json, or {} when there is none."""
    return json.loads(path.read_text())["runs"] if path.exists() else {}
