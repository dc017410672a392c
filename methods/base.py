"""The Method protocol: compression as pure functions over parameter pytrees.

A method is a frozen dataclass of hyper-parameters with pure hooks. Every
hook defaults to the identity, so a method overrides only what it needs:

  init(params, rng) -> state                 masks, scores, calibration, ...
  init_params(params, rng) -> params         add method-owned trainable params (projections,
                                             successor layers); `forward_params` hides them
  forward_params(params, state) -> params    what the model sees (masked, fake-quant)
  overrides(state) -> dict                   model overrides (head_mask, layers, ...)
  eval_overrides(state) -> dict              overrides at evaluation (default: the same)
  observed(overrides) -> pytree              what the overrides recorded while the model
                                             was traced (activation statistics), read in
                                             that same trace and returned by the step
  observe(state, observed) -> state          folds those statistics in (before `update`)
  calibration_batches() -> int               forward-only batches wanted before training
  loss(student, teacher, batch, state, params) -> (loss, metrics)   extra loss terms (KD);
                                             `params` are the raw trainable params
  observe_loss(state, metrics) -> state      folds in what `loss` measured (EMD layer weights)
  wrap_optimizer(tx, params) -> tx           freezing, masked updates
  update(params, grads, state, step) -> state  schedules, movement scores
  finalize(params, state, config) -> (params, config)  physical compression
  report(params, state) -> dict              numbers for results.json
  intermediates() -> tuple                   what `loss` reads from (student, teacher) `inter`
  hard_loss_weight() -> float                weight of the task loss (KD mixes it with alpha)

Methods never import Flax modules: they see pytrees, intermediates dicts and
configs. `compose([m1, m2])` chains methods in order, so hybrids are a list.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class Method:
    """Base class: every hook is the identity (or adds nothing)."""

    def init(self, params: Any, rng: Any) -> Any:
        return {}

    def init_params(self, params: Any, rng: Any) -> Any:
        return params

    def forward_params(self, params: Any, state: Any) -> Any:
        return params

    def overrides(self, state: Any) -> dict[str, Any]:
        return {}

    def eval_overrides(self, state: Any) -> dict[str, Any]:
        return self.overrides(state)

    def observed(self, overrides: dict[str, Any]) -> Any:
        return {}

    def observe(self, state: Any, observed: Any) -> Any:
        return state

    def calibration_batches(self) -> int:
        return 0

    def loss(self, student: Any, teacher: Any, batch: dict, state: Any, params: Any = None):
        return jnp.zeros((), jnp.float32), {}

    def observe_loss(self, state: Any, metrics: dict) -> Any:
        return state

    def wrap_optimizer(
        self, tx: optax.GradientTransformation, params: Any
    ) -> optax.GradientTransformation:
        return tx

    def update(self, params: Any, grads: Any, state: Any, step: Any) -> Any:
        return state

    def finalize(self, params: Any, state: Any, config: Any):
        return params, config

    def report(self, params: Any, state: Any) -> dict[str, Any]:
        return {}

    def intermediates(self) -> tuple[str, ...]:
        return ()

    def hard_loss_weight(self) -> float:
        return 1.0


@dataclasses.dataclass(frozen=True)
class Composed(Method):
    """Methods applied in list order; state is a tuple, one entry per method.

    `forward_params` and `finalize` chain (the output of one is the input of
    the next), losses add up, optimizer wrappers nest (the first method's
    wrapper is innermost), and two methods may not set the same override.
    """

    methods: tuple[Method, ...] = ()

    def init(self, params, rng):
        return tuple(m.init(params, rng) for m in self.methods)

    def init_params(self, params, rng):
        for method in self.methods:
            params = method.init_params(params, rng)
        return params

    def forward_params(self, params, state):
        for method, substate in zip(self.methods, state, strict=True):
            params = method.forward_params(params, substate)
        return params

    def overrides(self, state):
        return self._merge_overrides(state, lambda m, s: m.overrides(s))

    def eval_overrides(self, state):
        return self._merge_overrides(state, lambda m, s: m.eval_overrides(s))

    def _merge_overrides(self, state, get):
        merged: dict[str, Any] = {}
        for method, substate in zip(self.methods, state, strict=True):
            for key, value in get(method, substate).items():
                if key in merged:
                    raise ValueError(f"two methods set the model override {key!r}")
                merged[key] = value
        return merged

    def observed(self, overrides):
        return tuple(m.observed(overrides) for m in self.methods)

    def observe(self, state, observed):
        return tuple(m.observe(s, o) for m, s, o in zip(self.methods, state, observed, strict=True))

    def calibration_batches(self):
        return max((m.calibration_batches() for m in self.methods), default=0)

    def observe_loss(self, state, metrics):
        return tuple(m.observe_loss(s, metrics) for m, s in zip(self.methods, state, strict=True))

    def loss(self, student, teacher, batch, state, params=None):
        total, metrics = jnp.zeros((), jnp.float32), {}
        for method, substate in zip(self.methods, state, strict=True):
            value, extra = method.loss(student, teacher, batch, substate, params)
            total = total + value
            metrics.update(extra)
        return total, metrics

    def wrap_optimizer(self, tx, params):
        for method in self.methods:
            tx = method.wrap_optimizer(tx, params)
        return tx

    def update(self, params, grads, state, step):
        return tuple(
            m.update(params, grads, s, step) for m, s in zip(self.methods, state, strict=True)
        )

    def finalize(self, params, state, config):
        for method, substate in zip(self.methods, state, strict=True):
            params, config = method.finalize(params, substate, config)
        return params, config

    def intermediates(self):
        return tuple(sorted({name for m in self.methods for name in m.intermediates()}))

    def hard_loss_weight(self):
        weight = 1.0
        for method in self.methods:
            weight *= method.hard_loss_weight()
        return weight

    def report(self, params, state):
        merged: dict[str, Any] = {}
        for method, substate in zip(self.methods, state, strict=True):
            merged.update(method.report(params, substate))
        return merged


def compose(methods: Sequence[Method]) -> Method:
    """One method running `methods` in order (the identity for an empty list)."""
    methods = tuple(methods)
    return methods[0] if len(methods) == 1 else Composed(methods)
