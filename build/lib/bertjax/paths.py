"""Where data, checkpoints and caches live.

Every location has an environment variable; the defaults point at the
`shared/` folder beside the repository, which is what tests and CI use.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """`$BERTJAX_DATA`, holding `glue/<TASK>/{train,dev}.tsv` in GLUE's layout."""
    return Path(os.environ.get("BERTJAX_DATA", REPO_ROOT.parent / "shared" / "data"))


def models_root() -> Path:
    """`$BERTJAX_MODELS`, holding checkpoints in HF layout by short name."""
    return Path(os.environ.get("BERTJAX_MODELS", REPO_ROOT.parent / "shared" / "models"))


def cache_root() -> Path:
    """`$BERTJAX_CACHE`, for tokenized data sets and compiled executables (`xla/`)."""
    return Path(os.environ.get("BERTJAX_CACHE", Path.home() / ".cache" / "bertjax"))
