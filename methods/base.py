"""The Method protocol: compression as pure functions over parameter pytrees.

A method is a frozen dataclass of hyper-parameters with pure hooks. Every
hook defaults to the identity, so a method overrides only what it needs:

  init(params, rng) -> state                 masks, scores, calibration, ...
  forward_params(params, state) -> params    what the model sees (masked, fake-quant)
  overrides(state) -> dict                   model overrides (head_mask, layers, ...)
  loss(student, teacher, batch, state) -> (loss, metrics)   extra loss terms (KD)
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

    def forward_params(self, params: Any, state: Any) -> Any:
        return params

    def overrides(self, state: Any) -> dict[str, Any]:
        return {}

    def loss(self, student: Any, teacher: Any, batch: dict, state: Any):
        return jnp.zeros((), jnp.float32), {}

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

    def forward_params(self, params, state):
        for method, substate in zip(self.methods, state, strict=True):
            params = method.forward_params(params, substate)
        return params

    def overrides(self, state):
        merged: dict[str, Any] = {}
        for method, substate in zip(self.methods, state, strict=True):
            for key, value in method.overrides(substate).items():
                if key in merged:
                    raise ValueError(f"two methods set the model override {key!r}")
                merged[key] = value
        return merged

    def loss(self, student, teacher, batch, state):
        total, metrics = jnp.zeros((), jnp.float32), {}
        for method, substate in zip(self.methods, state, strict=True):
            value, extra = method.loss(student, teacher, batch, substate)
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
