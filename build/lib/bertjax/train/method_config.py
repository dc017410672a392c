"""Compression methods from a run's config: a registry of config blocks.

Each block (`config.lowrank`, `config.ladabert`, `config.prune`, `config.structured`,
`config.quant`, `config.distill`, `config.theseus`, `config.bitfit`, `config.layer_drop`,
`config.early_exit`, `config.token_reduction`, `config.precision`) is read
by its method's own `from_config` with the block's field names; a block that is absent (or
None), or whose `from_config` returns None (`precision.compute="fp32"`), means that
method is off. `config.method_order` lists the blocks in the
order `compose` applies them; factorization comes first (pruning then sees the
factors, whose shapes the optimizer state takes); Theseus comes before quantization (its successor
layers must exist when activation sites are enumerated), layer dropping comes last
because its `finalize` renumbers layers. results.json's `method` is the composed method's
`name` ("finetune" for none).
"""

from ml_collections import ConfigDict

from methods import distill, pruning, quant
from methods.base import Context, Method, compose
from methods.bitfit import BitFit
from methods.distill.theseus import ModuleReplacing
from methods.dynamic.early_exit import EarlyExit
from methods.dynamic.token_reduction import TokenReduction
from methods.lowrank import LadaBert, LowRank
from methods.precision import Precision
from methods.pruning.layer_drop import LayerDrop
from methods.pruning.structured import StructuredPruning

DEFAULT_ORDER = (
    "lowrank", "ladabert", "prune", "structured", "theseus", "quant", "distill",
    "token_reduction", "bitfit", "layer_drop", "early_exit", "precision",
)  # fmt: skip

REGISTRY = {
    "lowrank": LowRank.from_config,
    "ladabert": LadaBert.from_config,
    "prune": pruning.from_config,
    "structured": StructuredPruning.from_config,
    "quant": quant.from_config,
    "distill": distill.from_config,
    "theseus": ModuleReplacing.from_config,
    "bitfit": BitFit.from_config,
    "layer_drop": LayerDrop.from_config,
    "early_exit": EarlyExit.from_config,
    "token_reduction": TokenReduction.from_config,
    "precision": Precision.from_config,
}


def build_method(config: ConfigDict, context: Context) -> Method:
    """The composed method of every present block, in `config.method_order`."""
    order = tuple(config.get("method_order", DEFAULT_ORDER))
    unknown = set(order) - set(REGISTRY)
    if unknown:
        raise ValueError(f"unknown method blocks {sorted(unknown)}; known: {sorted(REGISTRY)}")
    built = [
        REGISTRY[name](config[name], context) for name in order if config.get(name) is not None
    ]
    return compose([method for method in built if method is not None])


def method_name(method: Method) -> str:
    """results.json's `method`: the composed methods' names, "finetune" for none."""
    return method.name or "finetune"
