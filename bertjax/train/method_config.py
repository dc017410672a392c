"""Compression methods from a run's config: each method has its own block.

`config.prune` (magnitude pruning) and `config.bitfit`; a block that is
absent (or None) means that method is off. `config.method_order` lists the
blocks in the order `compose` applies them.
"""

from ml_collections import ConfigDict

from methods.base import Method, compose
from methods.bitfit import BitFit
from methods.pruning import MagnitudePruning, SparsitySchedule

DEFAULT_ORDER = ("prune", "bitfit")


def _prune(block: ConfigDict, total_steps: int) -> Method:
    if block.kind != "magnitude":
        raise ValueError(f"unknown pruning kind {block.kind!r}; known: 'magnitude'")
    schedule = SparsitySchedule(
        target=block.sparsity,
        start_step=int(round(block.start_fraction * total_steps)),
        end_step=int(round(block.end_fraction * total_steps)),
        every=block.every_steps,
        initial=block.initial_sparsity,
    )
    return MagnitudePruning(schedule=schedule, select=tuple(block.select), scope=block.scope)


def _bitfit(block: ConfigDict, total_steps: int) -> Method:
    return BitFit(trainable=tuple(block.trainable))


BUILDERS = {"prune": _prune, "bitfit": _bitfit}


def build_method(config: ConfigDict, total_steps: int) -> Method:
    """The composed method of every present block, in `config.method_order`."""
    order = tuple(config.get("method_order", DEFAULT_ORDER))
    unknown = set(order) - set(BUILDERS)
    if unknown:
        raise ValueError(f"unknown method blocks {sorted(unknown)}; known: {sorted(BUILDERS)}")
    return compose(
        [
            BUILDERS[name](config[name], total_steps)
            for name in order
            if config.get(name) is not None
        ]
    )
