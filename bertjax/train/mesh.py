"""Data parallelism over every device: one `data` mesh axis.

Params and optimizer state are replicated; each batch is split along its
first axis. Works the same on 1 CPU, 8 fake CPU devices, a GPU or a pod
slice; on several hosts each process passes its local share of the batch.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch size") -> None:
    """A ValueError naming `name` unless `batch_size` splits evenly over the devices."""
    if batch_size % mesh.size:
        raise ValueError(f"{name} {batch_size} is not divisible by the {mesh.size} devices")


def process_rows(batch: dict[str, np.ndarray], index: int, count: int) -> dict[str, np.ndarray]:
    """This process's contiguous share of a global batch (all of it on one host)."""
    size = len(next(iter(batch.values())))
    if size % count:
        raise ValueError(f"batch size {size} is not divisible by the {count} processes")
    share = size // count
    return {k: v[index * share : (index + 1) * share] for k, v in batch.items()}


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Global arrays split over `data` from a global host batch.

    Every process builds the same global batch (same seed); each contributes
    its own rows, so multi-host runs (after `jax.distributed.initialize()`)
    need no other change.
    """
    sharding = data_sharded(mesh)
    local = process_rows(batch, jax.process_index(), jax.process_count())
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))
