"""Compression methods from a run's config: each method has its own block.

Blocks: `config.prune` (unstructured: magnitude or movement), `config.structured`
(heads and FFN neurons), `config.quant` (weights and/or activations),
`config.distill` (logit KD from `config.teacher`), `config.layer_drop`,
`config.bitfit`. A block that is absent (or None) means that method is off.
`config.method_order` lists the blocks in the order `compose` applies them;
layer dropping comes last by default because its `finalize` renumbers layers.
"""

from ml_collections import ConfigDict

from bertjax.models import BertConfig
from methods.base import Method, compose
from methods.bitfit import BitFit
from methods.distill import LogitDistillation
from methods.pruning import MagnitudePruning, MovementPruning, SparsitySchedule
from methods.pruning.layer_drop import LayerDrop
from methods.pruning.structured import StructuredPruning
from methods.quant import ActivationQuantization, QuantSpec, WeightQuantization

DEFAULT_ORDER = ("prune", "structured", "quant", "distill", "bitfit", "layer_drop")


def _steps(fraction: float, total_steps: int) -> int:
    return int(round(fraction * total_steps))


def _prune(block: ConfigDict, total_steps: int, model: BertConfig, regression: bool) -> Method:
    schedule = SparsitySchedule(
        target=block.sparsity,
        start_step=_steps(block.start_fraction, total_steps),
        end_step=_steps(block.end_fraction, total_steps),
        every=block.every_steps,
        initial=block.initial_sparsity,
    )
    common = dict(schedule=schedule, select=tuple(block.select), scope=block.scope)
    if block.kind == "magnitude":
        return MagnitudePruning(**common)
    if block.kind == "movement":
        return MovementPruning(
            **common,
            kind=block.movement,
            threshold=block.threshold,
            l1=block.l1,
            score_lr=block.score_lr,
        )
    raise ValueError(f"unknown pruning kind {block.kind!r}; known: magnitude, movement")


def _structured(block: ConfigDict, total_steps: int, model: BertConfig, regression: bool) -> Method:
    return StructuredPruning(
        num_heads=model.num_attention_heads,
        head_sparsity=block.head_sparsity,
        ffn_sparsity=block.ffn_sparsity,
        importance=block.importance,
        scope=block.scope,
        prune_step=max(
            _steps(block.prune_fraction, total_steps), 1 if block.importance == "gradient" else 0
        ),
    )


def _layer_drop(block: ConfigDict, total_steps: int, model: BertConfig, regression: bool) -> Method:
    return LayerDrop(
        num_layers=model.num_hidden_layers,
        drop=block.drop,
        strategy=block.strategy,
        layers_to_drop=tuple(block.layers),
    )


def _quant(block: ConfigDict, total_steps: int, model: BertConfig, regression: bool) -> Method:
    parts = []
    if block.weight_bits:
        spec = QuantSpec(
            block.weight_bits,
            symmetric=block.weight_symmetric,
            per_channel=block.weight_per_channel,
        )
        parts.append(WeightQuantization(spec))
    if block.activation_bits:
        parts.append(
            ActivationQuantization(
                QuantSpec(block.activation_bits, symmetric=block.activation_symmetric)
            )
        )
    return compose(parts)


def _distill(block: ConfigDict, total_steps: int, model: BertConfig, regression: bool) -> Method:
    if block.kind not in ("soft_ce", "mse"):
        raise ValueError(f"unknown distillation kind {block.kind!r}; known: soft_ce, mse")
    return LogitDistillation(
        temperature=block.temperature, alpha=block.alpha, kind=block.kind, regression=regression
    )


def _bitfit(block: ConfigDict, total_steps: int, model: BertConfig, regression: bool) -> Method:
    return BitFit(trainable=tuple(block.trainable))


BUILDERS = {
    "prune": _prune,
    "structured": _structured,
    "quant": _quant,
    "distill": _distill,
    "layer_drop": _layer_drop,
    "bitfit": _bitfit,
}


def build_method(
    config: ConfigDict, total_steps: int, model: BertConfig, regression: bool = False
) -> Method:
    """The composed method of every present block, in `config.method_order`."""
    order = tuple(config.get("method_order", DEFAULT_ORDER))
    unknown = set(order) - set(BUILDERS)
    if unknown:
        raise ValueError(f"unknown method blocks {sorted(unknown)}; known: {sorted(BUILDERS)}")
    return compose(
        [
            BUILDERS[name](config[name], total_steps, model, regression)
            for name in order
            if config.get(name) is not None
        ]
    )
