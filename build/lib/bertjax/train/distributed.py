"""Multi-process runs: `jax.distributed` set up from the command line, and agreement.

One run may span several processes (hosts of a pod slice, GPU servers, or several
processes on one CPU machine): each process runs the same command and program; the
mesh spans every device of every process (`mesh.make_mesh`); each process feeds the
rows of the global batch that land on its own devices (`mesh.shard_batch`); process 0
alone writes logs, results and exports, and every process takes part in checkpoint
saves (orbax). The workdir must be one directory that every process sees (a shared
file system, or one machine).

`initialize` must run before anything touches devices (`main.py` calls it first).
On CPU, collectives between processes go through gloo.
"""

import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from bertjax.train import validation

# The environment variables the flags default to (JAX reads the first itself).
ENV = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}


def from_environment(name: str) -> str | int | None:
    """The default of flag `name` from its environment variable (`ENV`), or None."""
    value = os.environ.get(ENV[name])
    if value is None or name == "coordinator_address":
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${ENV[name]} must be an integer, got {value!r}") from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """`jax.distributed.initialize` with these settings (all None: auto-detected on a TPU
    pod slice, under Slurm or Open MPI). On CPU, cross-process collectives use gloo
    unless `JAX_CPU_COLLECTIVES_IMPLEMENTATION` chose another (e.g. mpi).
    Raises ValueError for inconsistent settings."""
    problem = validation.distributed_problem(coordinator_address, num_processes, process_id)
    if problem:
        raise ValueError(problem)
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address or None,
        num_processes=num_processes,
        process_id=process_id,
    )


def is_main() -> bool:
    """Whether this process writes a run's files (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches `barrier(name)` (nothing on one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def agreed_signal(signum: int | None) -> int | None:
    """The signal that stops the run, the same on every process: `signum` (the one this
    process received, or None) on one process; else the lowest-numbered process's that
    received one. One process alone seeing a signal must not stop alone: the others
    would wait on it in the next collective."""
    if jax.process_count() == 1:
        return signum
    signals = multihost_utils.process_allgather(np.asarray(signum or 0, np.int32))
    received = [int(s) for s in np.asarray(signals).ravel() if s]
    return received[0] if received else None
