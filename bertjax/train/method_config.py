"""Compression methods from a run's config: each method has its own block.

Blocks: `config.prune` (unstructured: magnitude or movement), `config.structured`
(heads and FFN neurons), `config.quant` (weights and/or activations),
`config.distill` (from `config.teacher`: logit KD, TinyBERT, BERT-EMD),
`config.theseus` (module replacing), `config.layer_drop`, `config.bitfit`.
A block that is absent (or None) means that method is off.
`config.method_order` lists the blocks in the order `compose` applies them;
layer dropping comes last by default because its `finalize` renumbers layers.
"""

from ml_collections import ConfigDict

from bertjax.models import BertConfig
from methods.base import Method, compose
from methods.bitfit import BitFit
from methods.distill import LogitDistillation
from methods.distill.bert_emd import EmdDistillation
from methods.distill.theseus import ModuleReplacing
from methods.distill.tinybert import TinyBertDistillation
from methods.pruning import MagnitudePruning, MovementPruning, SparsitySchedule
from methods.pruning.layer_drop import LayerDrop
from methods.pruning.structured import StructuredPruning
from methods.quant import ActivationQuantization, Int8Matmul, QuantSpec, WeightQuantization

DEFAULT_ORDER = ("prune", "structured", "quant", "distill", "theseus", "bitfit", "layer_drop")


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
            score_optimizer=block.score_optimizer,
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
    strategy = block.strategy
    if strategy == "contribution":
        # The loop measures the layers first (calibration.resolve_layer_drop) and sets `layers`.
        if block.drop and not block.layers:
            raise ValueError(
                "layer_drop strategy 'contribution' needs its layers measured first: "
                "train_and_evaluate does it (bertjax.train.calibration.resolve_layer_drop)"
            )
        strategy = "explicit"
    return LayerDrop(
        num_layers=model.num_hidden_layers,
        drop=block.drop,
        strategy=strategy,
        layers_to_drop=tuple(block.layers),
    )


def _quant(block: ConfigDict, total_steps: int, model: BertConfig, regression: bool) -> Method:
    if block.get("int8", False):  # real int8 matmuls at evaluation, not fake-quant
        return Int8Matmul()
    parts = []
    if block.weight_bits:
        spec = QuantSpec(
            block.weight_bits,
            symmetric=block.weight_symmetric,
            per_channel=block.weight_per_channel,
        )
        parts.append(WeightQuantization(spec))
    if block.activation_bits:
        # Blocks written before static ranges lack these fields: dynamic ranges, no calibration.
        parts.append(
            ActivationQuantization(
                QuantSpec(block.activation_bits, symmetric=block.activation_symmetric),
                ranges=block.get("activation_ranges", "dynamic"),
                ema_decay=block.get("ema_decay", 0.9999),
                calibration=block.get("calibration", ""),
                num_calibration_batches=block.get("calibration_batches", 0)
                if block.get("calibration", "")
                else 0,
                percentile=block.get("calibration_percentile", 99.99),
            )
        )
    return compose(parts)


DISTILL_KINDS = ("soft_ce", "mse", "tinybert", "emd")


def _distill(
    block: ConfigDict,
    total_steps: int,
    model: BertConfig,
    regression: bool,
    teacher: BertConfig | None = None,
) -> Method:
    if block.kind not in DISTILL_KINDS:
        raise ValueError(f"unknown distillation kind {block.kind!r}; known: {DISTILL_KINDS}")
    if block.kind in ("soft_ce", "mse"):
        return LogitDistillation(
            temperature=block.temperature, alpha=block.alpha, kind=block.kind, regression=regression
        )
    if teacher is None:
        raise ValueError(f"{block.kind} distillation needs config.teacher")
    common = dict(
        student_hidden=model.hidden_size,
        teacher_hidden=teacher.hidden_size,
        student_layers=model.num_hidden_layers,
        teacher_layers=teacher.num_hidden_layers,
        stage=block.stage,
        split_step=_steps(block.split_fraction, total_steps),
        temperature=block.temperature,
        regression=regression,
    )
    if block.kind == "tinybert":
        return TinyBertDistillation(
            **common, layer_map=block.layer_map, explicit_map=tuple(block.explicit_map)
        )
    return EmdDistillation(
        **common,
        weight_temperature=block.weight_temperature,
        update_weights=block.update_weights,
    )


def _theseus(block: ConfigDict, total_steps: int, model: BertConfig, regression: bool) -> Method:
    ramp = _steps(block.ramp_fraction, total_steps)
    slope = (1.0 - block.rate) / max(ramp, 1) if block.schedule == "linear" else 0.0
    return ModuleReplacing(
        num_layers=model.num_hidden_layers,
        num_successors=block.successors,
        schedule=block.schedule,
        rate=block.rate,
        slope=slope,
        init_from=block.init_from,
        trainable=tuple(block.trainable),
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
    "theseus": _theseus,
}


def build_method(
    config: ConfigDict,
    total_steps: int,
    model: BertConfig,
    regression: bool = False,
    teacher: BertConfig | None = None,
) -> Method:
    """The composed method of every present block, in `config.method_order`.

    `teacher` is the distillation teacher's architecture (layer map, widths).
    """
    order = tuple(config.get("method_order", DEFAULT_ORDER))
    unknown = set(order) - set(BUILDERS)
    if unknown:
        raise ValueError(f"unknown method blocks {sorted(unknown)}; known: {sorted(BUILDERS)}")
    return compose(
        [
            BUILDERS[name](
                config[name],
                total_steps,
                model,
                regression,
                **({"teacher": teacher} if name == "distill" else {}),
            )
            for name in order
            if config.get(name) is not None
        ]
    )
