"""A persistent XLA compilation cache, on by default for training and prediction.

Each padded length of a task is its own executable: a MiniLM-L6 train step takes
~10 CPU-s to compile, a task has four lengths (32..128) plus the evaluation ones.
With the cache, the next run of the same shapes (another seed, a resumed run, a
grid's next cell, the predictor's buckets) loads the executables from disk: a
one-epoch MRPC bf16 fine-tune went from 141.8 to 127.5 s of training, 1.39x to
1.54x PyTorch (benchmarks/results/runtime.md, session 11).

Where it lives, first match wins:
  * JAX's own setting (`JAX_COMPILATION_CACHE_DIR` or `jax.config`), left as it is;
  * `$BERTJAX_COMPILATION_CACHE`: a directory, or `off` to disable the cache;
  * `$BERTJAX_CACHE/xla` (`~/.cache/bertjax/xla`), capped at `MAX_BYTES` (least
    recently used entries go).
The cache key covers the program, the backend and the XLA flags, so a cached
executable is the one XLA would compile; `tests/test_compilation.py` checks a run
with a warm cache gives bit-identical results.
"""

import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

from bertjax import paths

MAX_BYTES = 4 * 2**30
OFF = ("off", "0", "false", "no", "none")


def enable() -> Path | None:
    """Turns the cache on (see the module doc); returns its directory, None if off.

    Idempotent; call it before the first compilation of the work it should cover (an
    earlier compilation is not cached, later ones are).
    """
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    choice = os.environ.get("BERTJAX_COMPILATION_CACHE", "").strip()
    if choice.lower() in OFF:
        return None
    directory = Path(choice).expanduser() if choice else paths.cache_root() / "xla"
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    if jax.config.jax_compilation_cache_max_size == -1:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    # A compilation before this call made JAX decide "no cache" for the process.
    compilation_cache.reset_cache()
    return directory
