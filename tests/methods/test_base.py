"""The Method protocol and compose()."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from methods.base import Composed, Method, compose


@dataclasses.dataclass(frozen=True)
class Scale(Method):
    factor: float = 2.0

    def init(self, params, rng):
        return {"calls": jnp.zeros((), jnp.int32)}

    def forward_params(self, params, state):
        return {k: v * self.factor for k, v in params.items()}

    def update(self, params, grads, state, step):
        return {"calls": state["calls"] + 1}

    def overrides(self, state):
        return {"layers": (0,)}


@dataclasses.dataclass(frozen=True)
class Shift(Method):
    def forward_params(self, params, state):
        return {k: v + 1.0 for k, v in params.items()}

    def loss(self, student, teacher, batch, state, params=None):
        return jnp.asarray(0.5), {"shift_loss": jnp.asarray(0.5)}


PARAMS = {"w": jnp.asarray([1.0, 2.0])}


def test_identity_method_changes_nothing():
    method = Method()
    state = method.init(PARAMS, None)
    assert method.forward_params(PARAMS, state) is PARAMS
    assert method.overrides(state) == {}
    tx = optax.sgd(0.1)
    assert method.wrap_optimizer(tx, PARAMS) is tx
    assert float(method.loss(None, None, {}, state)[0]) == 0.0


def test_compose_applies_methods_in_list_order():
    scale_then_shift = compose([Scale(), Shift()])
    shift_then_scale = compose([Shift(), Scale()])
    for method, expected in ((scale_then_shift, [3.0, 5.0]), (shift_then_scale, [4.0, 6.0])):
        state = method.init(PARAMS, None)
        np.testing.assert_allclose(method.forward_params(PARAMS, state)["w"], expected)


def test_compose_states_losses_and_overrides():
    method = compose([Scale(), Shift()])
    assert isinstance(method, Composed)
    state = method.init(PARAMS, None)
    state = method.update(PARAMS, PARAMS, state, 1)
    assert int(state[0]["calls"]) == 1 and state[1] == {}
    loss, metrics = method.loss(None, None, {}, state)
    assert float(loss) == 0.5 and "shift_loss" in metrics
    assert method.overrides(state) == {"layers": (0,)}
    with pytest.raises(ValueError, match="override 'layers'"):
        twice = compose([Scale(), Scale(3.0)])
        twice.overrides(twice.init(PARAMS, None))


def test_compose_of_one_is_that_method():
    method = Scale()
    assert compose([method]) is method
    assert isinstance(compose([]), Composed)
