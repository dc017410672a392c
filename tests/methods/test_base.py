"""The Method protocol and compose(): identity hooks, list order, merged interventions."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertjax.models.interventions import Interventions
from bertjax.train.method_config import method_name
from methods.base import Composed, Context, Method, compose


@dataclasses.dataclass(frozen=True)
class Scale(Method):
    """Multiplies `w`; counts its updates; runs only layer 0."""

    factor: float = 2.0

    def init(self, params, rngs):
        return params, {"calls": jnp.zeros((), jnp.int32)}

    def present(self, params, state, step, train):
        return {**params, "w": params["w"] * self.factor}, Interventions(layers=(0,))

    def update(self, state, params, grads, aux, step):
        return {"calls": state["calls"] + 1}


@dataclasses.dataclass(frozen=True)
class Shift(Method):
    """Adds 1 to `w`; adds 0.5 to the loss."""

    def present(self, params, state, step, train):
        return {**params, "w": params["w"] + 1.0}, Interventions(head_mask=jnp.ones((1, 2)))

    def loss(self, task_loss, student, teacher, batch, params, state, step):
        return task_loss + 0.5, {"shift_loss": jnp.asarray(0.5)}


@dataclasses.dataclass(frozen=True)
class Tag(Method):
    """Leaves a trace of every hook's call order (each hook appends `tag`)."""

    tag: str = "a"
    batches: int = 0

    @property
    def name(self):
        return f"tag_{self.tag}"

    @property
    def intermediates(self):
        return (f"hidden_{self.tag}", "shared")

    @property
    def calibration_batches(self):
        return self.batches

    def init(self, params, rngs):
        return {**params, "trail": params["trail"] + self.tag}, {"own": self.tag}

    def present(self, params, state, step, train):
        return {**params, "trail": params["trail"] + state["own"]}, Interventions()

    def loss(self, task_loss, student, teacher, batch, params, state, step):
        # Not commutative: the order of the methods shows in the value.
        return task_loss * 10 + len(self.tag), {f"seen_{self.tag}": task_loss}

    def wrap_optimizer(self, tx, params):
        return ("wrapped", self.tag, tx)

    def update(self, state, params, grads, aux, step):
        return {"own": state["own"] + f"@{step}"}

    def finalize(self, params, state, config):
        return {**params, "trail": params["trail"] + state["own"]}, config + self.tag

    def report(self, params, state):
        return {"last": self.tag, self.tag: state["own"]}


PARAMS = {"w": jnp.asarray([1.0, 2.0])}


def test_identity_method_changes_nothing():
    method = Method()
    params, state = method.init(PARAMS, {"state": None, "params": None})
    assert params is PARAMS and state == {}
    seen, interventions = method.present(PARAMS, state, 3, True)
    assert seen is PARAMS and interventions.set_fields() == ()
    tx = optax.sgd(0.1)
    assert method.wrap_optimizer(tx, PARAMS) is tx
    task = jnp.asarray(1.25)
    loss, metrics = method.loss(task, None, None, {}, PARAMS, state, 0)
    assert loss is task and metrics == {}
    assert method.update(state, PARAMS, PARAMS, {"metrics": {}, "stats": {}}, 0) is state
    assert method.finalize(PARAMS, state, "config") == (PARAMS, "config")
    assert method.report(PARAMS, state) == {}
    assert (method.intermediates, method.calibration_batches) == ((), 0)


def test_compose_applies_methods_in_list_order():
    scale_then_shift = compose([Scale(), Shift()])
    shift_then_scale = compose([Shift(), Scale()])
    for method, expected in ((scale_then_shift, [3.0, 5.0]), (shift_then_scale, [4.0, 6.0])):
        params, state = method.init(PARAMS, {})
        seen, interventions = method.present(params, state, 0, True)
        np.testing.assert_allclose(seen["w"], expected)
        # Both methods' interventions reach the model, whatever the order.
        assert interventions.layers == (0,) and interventions.head_mask.shape == (1, 2)


def test_compose_chains_every_hook_in_list_order():
    method = compose([Tag("a", batches=2), Tag("bb", batches=5)])
    assert isinstance(method, Composed)
    assert method.name == "tag_a+tag_bb"
    assert method.intermediates == ("hidden_a", "hidden_bb", "shared")
    assert method.calibration_batches == 5
    params, state = method.init({"trail": ""}, {})
    assert params["trail"] == "abb" and state == ({"own": "a"}, {"own": "bb"})
    seen, _ = method.present(params, state, 0, True)
    assert seen["trail"] == "abbabb"
    # Losses thread: a sees the task loss, bb sees a's result.
    loss, metrics = method.loss(1.0, None, None, {}, params, state, 0)
    assert loss == (1.0 * 10 + 1) * 10 + 2
    assert metrics == {"seen_a": 1.0, "seen_bb": 11.0}
    # The first method's optimizer wrapper is the innermost.
    assert method.wrap_optimizer("tx", params) == ("wrapped", "bb", ("wrapped", "a", "tx"))
    state = method.update(state, params, None, {}, 7)
    assert state == ({"own": "a@7"}, {"own": "bb@7"})
    final, config = method.finalize({"trail": ""}, state, "cfg:")
    assert final["trail"] == "a@7bb@7" and config == "cfg:abb"
    assert method.report(params, state) == {"last": "bb", "a": "a@7", "bb": "bb@7"}


def test_compose_states_losses_and_interventions():
    method = compose([Scale(), Shift()])
    params, state = method.init(PARAMS, {})
    state = method.update(state, params, PARAMS, {"metrics": {}, "stats": {}}, 0)
    assert int(state[0]["calls"]) == 1 and state[1] == {}
    loss, metrics = method.loss(jnp.asarray(2.0), None, None, {}, params, state, 0)
    assert float(loss) == 2.5 and float(metrics["shift_loss"]) == 0.5
    twice = compose([Scale(), Scale(3.0)])
    params, state = twice.init(PARAMS, {})
    with pytest.raises(ValueError, match="two methods set the model intervention 'layers'"):
        twice.present(params, state, 0, True)


def test_compose_of_one_is_that_method_and_of_none_the_identity():
    method = Scale()
    assert compose([method]) is method
    empty = compose([])
    assert method_name(empty) == "finetune" and method_name(compose([Tag("x")])) == "tag_x"
    params, state = empty.init(PARAMS, {})
    assert params is PARAMS and state == ()
    seen, interventions = empty.present(PARAMS, state, 0, False)
    assert seen is PARAMS and interventions.set_fields() == ()


def test_context_steps_rounds_fractions_of_training():
    context = Context(total_steps=30)
    assert [context.steps(f) for f in (0.0, 0.7, 0.05, 1.0)] == [0, 21, 2, 30]
