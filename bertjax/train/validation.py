"""`check_config(config)`: a run config's values checked before anything loads.

Why: a bad value used to surface late and unnamed (`train.batch_size=0` died after
38 s with a ZeroDivisionError; `sparsity=70` said "need 0 <= initial <= target < 1").
Each rule here names its field and the values it allows; the first violation is a
one-line ValueError. Fields of a method block are checked only when the block is
present; the methods' own `from_config` checks remain (they also guard notebooks
that build methods directly). `distributed_problem` checks the command line's
multi-process settings the same way.
"""

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml_collections import ConfigDict

from bertjax.data import corpus, tasks
from bertjax.models.interventions import COMPUTE
from methods.distill import KINDS as DISTILL_KINDS
from methods.distill.layer_maps import MAPS
from methods.distill.tinybert import STAGES
from methods.dynamic.early_exit import STRATEGIES as EXIT_STRATEGIES
from methods.pruning import KINDS as PRUNING_KINDS
from methods.pruning.layer_drop import STRATEGIES
from methods.quant.activations import RANGES
from methods.quant.calibration import CALIBRATIONS
from methods.quant.int8 import ACTIVATIONS

# A check returns None for a good value, else what the value must be ("must be >= 1").
Check = Callable[[Any], str | None]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def at_least(low: float, *, integer: bool = False) -> Check:
    """Values >= `low` (integers only with `integer`)."""
    kind = "an integer" if integer else "a number"

    def check(value):
        fits = _is_number(value) and (isinstance(value, int) or not integer)
        return None if fits and value >= low else f"must be {kind} >= {low:g}"

    return check


def between(low: float, high: float, *, open_low=False, open_high=False, integer=False) -> Check:
    """Values in the interval from `low` to `high`, each end closed unless `open_*`."""
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    what = f"an integer in {interval}" if integer else f"in {interval}"

    def check(value):
        if not _is_number(value) or (integer and not isinstance(value, int)):
            return f"must be {what}"
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        return None if above and below else f"must be {what}"

    return check


def one_of(*choices: Any) -> Check:
    """Values among `choices`."""
    return lambda value: None if value in choices else f"must be one of {list(choices)}"


def bits_or_off(value: Any) -> str | None:
    """Activation bits: 0 (off) or 2..8."""
    if value == 0 and isinstance(value, int) and not isinstance(value, bool):
        return None
    return between(2, 8, integer=True)(value) and "must be 0 (off) or an integer in [2, 8]"


def known_task(value: Any) -> str | None:
    try:
        tasks.get_task(value)
    except ValueError:
        return f"must be a GLUE task ({', '.join(tasks.TASKS)})"
    return None


def directory_or_empty(value: Any) -> str | None:
    """A data root: empty (the default, $BERTJAX_DATA) or an existing directory."""
    return None if not value or Path(value).is_dir() else "must be an existing directory"


def each(check: Check) -> Check:
    """A non-empty list whose every item passes `check`."""

    def check_all(value):
        if not isinstance(value, list | tuple) or not value:
            return "must be a non-empty list"
        for item in value:
            problem = check(item)
            if problem:
                return f"must be a list of values each {problem.removeprefix('must be ')}"
        return None

    return check_all


def layer_indices(value: Any) -> str | None:
    """A list of layer indices >= 1, increasing; empty means the method's default."""
    fits = isinstance(value, list | tuple) and all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 1 for i in value
    )
    if not fits or list(value) != sorted(set(value)):
        return "must be an increasing list of layer indices >= 1 (empty: the default)"
    return None


def integer(value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"


def known_corpus(value: Any) -> str | None:
    """A corpus: a name of `corpus.CORPORA` or an existing text file."""
    if value in corpus.CORPORA or (isinstance(value, str) and Path(value).is_file()):
        return None
    return f"must be a text file or one of {sorted(corpus.CORPORA)}"


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be True or False"


FRACTION = between(0, 1)  # a share of training or of weights, both ends allowed
PROBABILITY = between(0, 1, open_high=True)  # a share that cannot be all (dropout, sparsity)
POSITIVE_INT = at_least(1, integer=True)
COUNT = at_least(0, integer=True)
NON_NEGATIVE = at_least(0)

# (field path, check); absent fields (a method block that is off) are skipped.
RULES: tuple[tuple[str, Check], ...] = (
    ("task", known_task),
    ("model.dtype", one_of("float32", "bfloat16", "float16")),
    ("model.hidden_dropout_prob", PROBABILITY),
    ("model.attention_probs_dropout_prob", PROBABILITY),
    ("model.truncate_to", COUNT),
    ("precision.compute", one_of(*COMPUTE)),
    ("data.source", one_of("tsv", "tfds")),
    ("data.root", directory_or_empty),
    ("data.max_seq_length", between(2, 512, integer=True)),
    ("data.train_limit", COUNT),
    ("data.eval_limit", COUNT),
    ("data.bucket_multiple", between(1, 512, integer=True)),
    ("train.num_epochs", NON_NEGATIVE),
    ("train.batch_size", POSITIVE_INT),
    ("train.eval_batch_size", POSITIVE_INT),
    ("train.learning_rate", NON_NEGATIVE),
    ("train.warmup_ratio", FRACTION),
    ("train.weight_decay", NON_NEGATIVE),
    ("train.max_grad_norm", NON_NEGATIVE),
    ("train.seed", COUNT),
    ("train.log_every_steps", POSITIVE_INT),
    ("train.eval_every_epochs", POSITIVE_INT),
    ("train.compile_ahead", boolean),
    ("checkpoint.every_steps", POSITIVE_INT),
    ("checkpoint.keep", POSITIVE_INT),
    ("lowrank.rank", COUNT),  # 0: rank not chosen by count (energy or ratio is)
    ("lowrank.energy", FRACTION),
    ("lowrank.ratio", FRACTION),
    ("lowrank.multiple", POSITIVE_INT),
    ("ladabert.target_ratio", between(0, 1, open_low=True, open_high=True)),
    ("ladabert.factor_ratio", FRACTION),  # 0: sqrt(target_ratio)
    ("ladabert.rounds", POSITIVE_INT),
    ("ladabert.end_fraction", FRACTION),
    ("prune.kind", one_of(*PRUNING_KINDS)),
    ("prune.sparsity", PROBABILITY),
    ("prune.initial_sparsity", PROBABILITY),
    ("prune.scope", one_of("layer", "global", "n:m")),
    ("prune.start_fraction", FRACTION),
    ("prune.end_fraction", FRACTION),
    ("prune.every_steps", POSITIVE_INT),
    ("prune.movement", one_of("hard", "soft")),
    ("prune.l1", NON_NEGATIVE),
    ("prune.score_lr", NON_NEGATIVE),
    ("prune.score_optimizer", one_of("sum", "adam")),
    ("structured.head_sparsity", PROBABILITY),
    ("structured.ffn_sparsity", PROBABILITY),
    ("structured.importance", one_of("gradient", "weight_norm")),
    ("structured.scope", one_of("layer", "global")),
    ("structured.prune_fraction", between(0, 1, open_low=True)),
    ("quant.weight_bits", between(2, 8, integer=True)),
    ("quant.activation_bits", bits_or_off),
    ("quant.activation_ranges", one_of(*RANGES)),
    ("quant.ema_decay", between(0, 1, open_low=True, open_high=True)),
    ("quant.calibration", one_of("", *CALIBRATIONS)),
    ("quant.calibration_batches", COUNT),
    ("quant.calibration_percentile", between(50, 100, open_low=True, open_high=True)),
    ("quant.int8_activations", one_of(*ACTIVATIONS)),
    ("distill.kind", one_of(*DISTILL_KINDS)),
    ("distill.temperature", between(0, math.inf, open_low=True, open_high=True)),
    ("distill.alpha", FRACTION),
    ("distill.stage", one_of(*STAGES)),
    ("distill.split_fraction", FRACTION),
    ("distill.layer_map", one_of(*MAPS)),
    ("distill.weight_temperature", NON_NEGATIVE),
    ("theseus.successors", POSITIVE_INT),
    ("theseus.schedule", one_of("constant", "linear")),
    ("theseus.rate", FRACTION),
    ("theseus.ramp_fraction", FRACTION),
    ("layer_drop.drop", COUNT),
    ("layer_drop.strategy", one_of(*STRATEGIES, "contribution")),
    ("layer_drop.calibration_batches", POSITIVE_INT),
    ("corpus.name", known_corpus),
    ("corpus.root", directory_or_empty),
    ("corpus.seq_len", between(3, 512, integer=True)),
    ("corpus.train_limit", COUNT),
    ("corpus.eval_limit", COUNT),
    ("corpus.eval_split", one_of(*corpus.SPLITS)),
    ("distill.embedding", boolean),
    ("train.num_steps", POSITIVE_INT),
    ("train.stop_after_steps", COUNT),
    ("train.eval_every_steps", POSITIVE_INT),
    ("supernet.archs_per_step", POSITIVE_INT),
    ("supernet.init", one_of("teacher", "random")),
    ("supernet.layers", each(POSITIVE_INT)),
    ("supernet.hidden", each(POSITIVE_INT)),
    ("supernet.heads", each(POSITIVE_INT)),
    ("supernet.ffn", each(POSITIVE_INT)),
    ("early_exit.strategy", one_of(*EXIT_STRATEGIES)),
    ("early_exit.thresholds", each(between(0, math.inf, open_high=True))),
    ("early_exit.patiences", each(POSITIVE_INT)),
    ("early_exit.delta", between(0, math.inf, open_low=True, open_high=True)),
    ("token_reduction.alpha", NON_NEGATIVE),
    ("token_reduction.samples", at_least(2, integer=True)),
    ("token_reduction.policy_fraction", FRACTION),
    ("token_reduction.guide_fraction", FRACTION),
    ("token_reduction.policy_lr", NON_NEGATIVE),
    ("token_reduction.width", POSITIVE_INT),
    ("token_reduction.threshold", between(0, 1, open_low=True, open_high=True)),
    ("token_reduction.temperature", between(0, math.inf, open_low=True, open_high=True)),
    ("token_reduction.layers", layer_indices),
    ("token_reduction.guide_layer", integer),
)

# (smaller field, larger field): pairs that must be ordered.
ORDERED = (
    ("prune.initial_sparsity", "prune.sparsity"),
    ("prune.start_fraction", "prune.end_fraction"),
)

_ABSENT = object()


def lookup(config: ConfigDict, path: str) -> Any:
    """The value at dotted `path`, or `_ABSENT` when a block on the way is absent or None."""
    value: Any = config
    for key in path.split("."):
        if not hasattr(value, "get") or value.get(key) is None:
            return _ABSENT
        value = value[key]
    return value


def problems(config: ConfigDict) -> list[str]:
    """Every violated rule of `config`, one line each (`config.F must be ..., got V`)."""
    found = []
    for path, check in RULES:
        value = lookup(config, path)
        problem = None if value is _ABSENT else check(value)
        if problem:
            found.append(f"config.{path} {problem}, got {value!r}")
    for small, large in ORDERED:
        low, high = lookup(config, small), lookup(config, large)
        if _ABSENT not in (low, high) and _is_number(low) and _is_number(high) and low > high:
            found.append(f"config.{small} must be <= config.{large} ({high!r}), got {low!r}")
    return found


def check_config(config: ConfigDict) -> None:
    """Raises ValueError with the first problem of `config` (see `problems`)."""
    found = problems(config)
    if found:
        raise ValueError(found[0])


COORDINATOR_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def distributed_problem(
    coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> str | None:
    """What is wrong with explicit distributed settings (None: fine). All three unset
    means auto-detection (TPU, Slurm, Open MPI); otherwise all three are needed."""
    given = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    missing = [name for name, value in given.items() if value is None or value == ""]
    if len(missing) == 3:
        return None
    if missing:
        named = ", ".join(f"--{name}" for name in missing)
        return f"{named} missing: give all three of {', '.join(given)}, or none"
    match = COORDINATOR_ADDRESS.match(coordinator_address)
    if not match or not 1 <= int(match.group(2)) <= 65535:
        return f"--coordinator_address must be HOST:PORT, got {coordinator_address!r}"
    if not isinstance(num_processes, int) or num_processes < 1:
        return f"--num_processes must be an integer >= 1, got {num_processes!r}"
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        return f"--process_id must be an integer in [0, {num_processes - 1}], got {process_id!r}"
    return None
