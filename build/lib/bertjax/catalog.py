"""What a user can run: the configs under `configs/`, the GLUE tasks, the named models.

`python -m bertjax.main --help` prints `catalog_text()`, so that a first-time user
sees every config with its one-line docstring and `:arg` keys (each config
module's `ARGS`, with defaults) without reading the sources.
"""

import dataclasses
import importlib
import textwrap
from pathlib import Path
from typing import Any

from bertjax import paths
from bertjax.data import tasks
from bertjax.models import variants

CONFIGS_DIR = paths.REPO_ROOT / "configs"


@dataclasses.dataclass(frozen=True)
class ConfigEntry:
    """One config file: `configs/{name}.py`, its docstring's first line, its `:arg` keys."""

    name: str
    summary: str
    args: dict[str, Any]


def config_names(directory: Path = CONFIGS_DIR) -> list[str]:
    """The config modules under `directory` (every `*.py` but `__init__`), sorted."""
    return sorted(path.stem for path in directory.glob("*.py") if path.stem != "__init__")


def config_entry(name: str) -> ConfigEntry:
    """`configs.{name}` imported and described (an `ARGS`-less config lists no keys)."""
    module = importlib.import_module(f"configs.{name}")
    doc = (module.__doc__ or "").strip()
    return ConfigEntry(name, doc.splitlines()[0] if doc else "", dict(getattr(module, "ARGS", {})))


def local_models() -> list[str]:
    """Checkpoint names under `$BERTJAX_MODELS` (directories with a config.json)."""
    root = paths.models_root()
    if not root.is_dir():
        return []
    return sorted(path.name for path in root.iterdir() if (path / "config.json").is_file())


def catalog_text() -> str:
    """The configs, tasks and models sections of `--help`."""
    lines = ["configs (--config=configs/NAME.py:KEY=VALUE,...; defaults shown):"]
    for entry in map(config_entry, config_names()):
        lines.append(f"  {entry.name:<18}{entry.summary}")
        keys = ", ".join(f"{k}={v if v != '' else repr(v)}" for k, v in entry.args.items())
        lines += textwrap.wrap(keys, width=100, initial_indent=" " * 20, subsequent_indent=" " * 20)
    lines += ["", "tasks (task=NAME): " + ", ".join(tasks.TASKS)]
    sizes = ", ".join(
        f"{name} ({layers}x{hidden})" for name, (layers, hidden, _) in variants.SIZES.items()
    )
    local = ", ".join(local_models()) or "none"
    lines += [
        "models (model=NAME):",
        f"  pretrained under $BERTJAX_MODELS ({paths.models_root()}): {local}",
        f"  random sizes (layers x hidden; need --config.model.tokenizer=DIR): {sizes}",
        "  or any checkpoint directory in HF layout (e.g. a run's export/), or a hub name",
    ]
    return "\n".join(lines)
