"""Orbax checkpoints of the `TrainState`: periodic, keep-K, resumed automatically.

A run restarts from the newest finished checkpoint in `WORKDIR/checkpoints`;
a save interrupted by a kill is never committed, so it is never restored.
"""

from pathlib import Path

import jax
import orbax.checkpoint as ocp

from bertjax.train.state import TrainState


def make_manager(workdir: str | Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(Path(workdir).resolve() / "checkpoints", options=options)


def save(manager: ocp.CheckpointManager, state: TrainState, *, force: bool = False) -> None:
    step = int(jax.device_get(state.step))
    manager.save(step, args=ocp.args.StandardSave(state), force=force)


def restore_latest(manager: ocp.CheckpointManager, state: TrainState) -> TrainState:
    """`state` replaced by the newest checkpoint, with the same shardings; unchanged if none."""
    step = manager.latest_step()
    if step is None:
        return state
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))
