"""The Method protocol: compression as pure functions over parameter pytrees.

A method is a frozen dataclass of hyper-parameters with pure hooks; every hook
defaults to the identity, so a method overrides only what it needs:

  from_config(block, context) -> method    built from its own config block (same field
                                           names); `Context` gives run-level facts
  init(params, rngs) -> (params, state)    method-owned params (projections, successor
                                           layers, movement scores) and state (masks,
                                           ranges); `rngs` holds named keys
  present(params, state, step, train) -> (params, interventions)
                                           what the model sees: masked / fake-quant
                                           params (method-owned ones hidden) and the
                                           `Interventions` of the forward pass
  loss(task_loss, student, teacher, batch, params, state, step) -> (loss, metrics)
                                           the training loss, given the running one (KD
                                           mixes it, TinyBERT replaces it, L1 adds to it)
  wrap_optimizer(tx, params) -> tx         freezing, per-group optimizers
  prepare(batch, params, state, step, apply) -> (batch, state)
                                           at the start of each train step: the batch and
                                           method state that step's forward and loss use
                                           (token reduction repeats the batch K times and
                                           adds its imitation guide); `apply(params, batch,
                                           interventions, collect) -> (outputs, inter)` is
                                           the deterministic model; `update` still gets the
                                           stored state
  update(state, params, grads, aux, step) -> state
                                           after each step (schedules, masks, importance):
                                           `aux["metrics"]` are the loss metrics,
                                           `aux["stats"]` the `quant_stats` collection;
                                           `grads` is None on forward-only calibration
                                           passes
  finalize(params, state, config) -> (params, config)   physical compression
  report(params, state) -> dict            numbers for results.json
  eval_outputs(params, state, outputs, inter, batch) -> dict
                                           per-example arrays [B, ...] computed in the
                                           jitted eval pass at the end of a run (exit
                                           logits of every layer, tokens kept) from its
                                           forward and its batch; run only when
                                           `has_eval_outputs`
  eval_report(extras, score) -> dict       results.json numbers from those arrays
                                           ([N, ...] over the eval split); `score(logits)`
                                           gives the task's official metrics of logits

`step` is always the index of the train step being taken (0 for the first; the
number of updates finished before it). Two static needs: `intermediates`
(what `loss` reads from the student's and teacher's `inter`) and
`calibration_batches` (forward-only batches before training); `name` is the
method's label in results.json.

Methods never import Flax modules: they see pytrees, intermediates dicts,
configs and the `Interventions` struct. `compose([m1, m2])` chains methods in
order, so hybrids are a list.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import optax

from bertjax.models.interventions import Interventions


@dataclasses.dataclass(frozen=True)
class Context:
    """Run-level facts a method's `from_config` may read besides its block."""

    total_steps: int = 1
    model: Any = None  # the student's BertConfig
    teacher: Any = None  # the teacher's BertConfig, when distilling
    regression: bool = False
    trains: bool = True  # False: no training steps (post-training methods)

    def steps(self, fraction: float) -> int:
        """A fraction of training as a step count (the one rounding rule)."""
        return int(round(fraction * self.total_steps))


def fields_from(cls, block, **extra) -> dict:
    """The dataclass fields of `cls` that `block` has, plus `extra`; unknown keys ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: block[k] for k in block.keys() if k in names} if block is not None else {}
    for key, value in values.items():
        if isinstance(value, list):
            values[key] = tuple(value)
    return {**values, **extra}


@dataclasses.dataclass(frozen=True)
class Method:
    """Base class: every hook is the identity (or adds nothing)."""

    @classmethod
    def from_config(cls, block, context: Context) -> "Method":
        return cls(**fields_from(cls, block))

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    @property
    def intermediates(self) -> tuple[str, ...]:
        return ()

    @property
    def calibration_batches(self) -> int:
        return 0

    def init(self, params: Any, rngs: dict) -> tuple[Any, Any]:
        return params, {}

    def present(self, params: Any, state: Any, step: Any, train: bool):
        return params, Interventions()

    def loss(self, task_loss, student, teacher, batch: dict, params, state, step):
        return task_loss, {}

    def wrap_optimizer(
        self, tx: optax.GradientTransformation, params: Any
    ) -> optax.GradientTransformation:
        return tx

    def prepare(self, batch: dict, params: Any, state: Any, step: Any, apply) -> tuple:
        return batch, state

    def update(self, state: Any, params: Any, grads: Any, aux: dict, step: Any) -> Any:
        return state

    def finalize(self, params: Any, state: Any, config: Any):
        return params, config

    def report(self, params: Any, state: Any) -> dict[str, Any]:
        return {}

    @property
    def has_eval_outputs(self) -> bool:
        return False

    def eval_outputs(
        self, params: Any, state: Any, outputs: dict, inter: dict, batch: dict
    ) -> dict:
        return {}

    def eval_report(self, extras: dict, score) -> dict[str, Any]:
        return {}


@dataclasses.dataclass(frozen=True)
class Composed(Method):
    """Methods applied in list order; state is a tuple, one entry per method.

    `init`, `present` and `finalize` chain (the params one returns are the next
    one's input), interventions merge (two methods may not set the same field),
    losses thread (each method receives the loss so far), optimizer wrappers
    nest (the first method's wrapper is innermost).
    """

    methods: tuple[Method, ...] = ()

    @property
    def name(self) -> str:
        return "+".join(m.name for m in self.methods)

    @property
    def intermediates(self):
        return tuple(sorted({name for m in self.methods for name in m.intermediates}))

    @property
    def calibration_batches(self):
        return max((m.calibration_batches for m in self.methods), default=0)

    def init(self, params, rngs):
        states = []
        for method in self.methods:
            params, state = method.init(params, rngs)
            states.append(state)
        return params, tuple(states)

    def present(self, params, state, step, train):
        merged = Interventions()
        for method, substate in zip(self.methods, state, strict=True):
            params, interventions = method.present(params, substate, step, train)
            merged = merged.merge(interventions)
        return params, merged

    def loss(self, task_loss, student, teacher, batch, params, state, step):
        total, metrics = task_loss, {}
        for method, substate in zip(self.methods, state, strict=True):
            total, extra = method.loss(total, student, teacher, batch, params, substate, step)
            metrics.update(extra)
        return total, metrics

    def wrap_optimizer(self, tx, params):
        for method in self.methods:
            tx = method.wrap_optimizer(tx, params)
        return tx

    def prepare(self, batch, params, state, step, apply):
        states = []
        for method, substate in zip(self.methods, state, strict=True):
            batch, substate = method.prepare(batch, params, substate, step, apply)
            states.append(substate)
        return batch, tuple(states)

    def update(self, state, params, grads, aux, step):
        return tuple(
            m.update(s, params, grads, aux, step) for m, s in zip(self.methods, state, strict=True)
        )

    def finalize(self, params, state, config):
        for method, substate in zip(self.methods, state, strict=True):
            params, config = method.finalize(params, substate, config)
        return params, config

    def report(self, params, state):
        merged: dict[str, Any] = {}
        for method, substate in zip(self.methods, state, strict=True):
            merged.update(method.report(params, substate))
        return merged

    @property
    def has_eval_outputs(self):
        return any(m.has_eval_outputs for m in self.methods)

    def eval_outputs(self, params, state, outputs, inter, batch):
        merged: dict[str, Any] = {}
        for method, substate in zip(self.methods, state, strict=True):
            merged.update(method.eval_outputs(params, substate, outputs, inter, batch))
        return merged

    def eval_report(self, extras, score):
        merged: dict[str, Any] = {}
        for method in self.methods:
            merged.update(method.eval_report(extras, score))
        return merged


def compose(methods: Sequence[Method]) -> Method:
    """One method running `methods` in order (the identity for an empty list)."""
    methods = tuple(methods)
    if len(methods) == 1:
        return methods[0]
    return Composed(methods)
