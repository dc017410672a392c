"""Data parallelism over every device: one `data` mesh axis.

Params and optimizer state are replicated; each batch is split along its
first axis. Works the same on 1 CPU, 8 fake CPU devices, a GPU or a pod
slice; in a multi-process run (`distributed.py`) the mesh spans every process's
devices and each process feeds its own devices' rows of the batch.
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


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Global arrays split over `data` from a global host batch.

    Every process builds the same global batch (same seed, same data) and hands
    each of its own devices that device's rows (`make_array_from_callback`), so the
    global batch of a multi-process run is the single-process one, whatever the
    order of the processes' devices in the mesh.
    """
    sharding = data_sharded(mesh)
    return {
        key: jax.make_array_from_callback(value.shape, sharding, lambda index, v=value: v[index])
        for key, value in batch.items()
    }


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))
