"""BERT-of-Theseus: the replace intervention, the schedule, extraction and freezing."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bertjax import models
from bertjax.models.interventions import Interventions, Replace
from bertjax.train import steps
from bertjax.train.optimizer import make_optimizer
from bertjax.train.state import TrainState
from methods.base import Context
from methods.distill.theseus import ModuleReplacing, replace_rate

CONFIG = models.BertConfig(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=4,
    num_attention_heads=2,
    intermediate_size=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


RNGS = {"state": jax.random.key(0), "params": jax.random.key(1)}


def _setup(init_from="module"):
    model, params = models.build(CONFIG, "classification", seed=0)
    method = ModuleReplacing(num_layers=4, successors=2, init_from=init_from)
    before = params
    params, _ = method.init(params, RNGS)
    sources = (0, 2) if init_from == "module" else (0, 1)
    for m, source in enumerate(sources):  # successors start as copies of their source layers
        chex.assert_trees_all_equal(
            params["bert"]["encoder"]["successor"][str(m)],
            before["bert"]["encoder"]["layer"][str(source)],
        )
    # Successors distinct from their source layers.
    params["bert"]["encoder"]["successor"] = jax.tree_util.tree_map(
        lambda x: x * 1.1, params["bert"]["encoder"]["successor"]
    )
    ids = np.random.default_rng(0).integers(1, 50, (2, 5)).astype(np.int32)
    return model, params, method, ids


def test_replace_intervention_runs_the_chosen_branch_of_each_module():
    model, params, method, ids = _setup()

    def apply(p, gate, **kw):
        replace = Replace(method.modules, jnp.asarray(gate))
        return model.apply({"params": p}, ids, interventions=Interventions(replace=replace))[0][
            "logits"
        ]

    plain = model.apply({"params": params}, ids)[0]["logits"]
    np.testing.assert_allclose(apply(params, [False, False]), plain, atol=1e-6)
    # Successor m alone == a model whose layers of module m are replaced by it.
    swapped = jax.tree_util.tree_map(jnp.array, params)
    swapped["bert"]["encoder"]["layer"]["2"] = params["bert"]["encoder"]["successor"]["1"]
    expected = model.apply({"params": swapped}, ids, interventions=Interventions(layers=(0, 1, 2)))[
        0
    ]["logits"]
    np.testing.assert_allclose(apply(params, [False, True]), expected, atol=1e-5)
    assert not np.allclose(expected, plain, atol=1e-5)
    # The gate is data: one trace for every combination.
    jitted = jax.jit(lambda gate: apply(params, gate))
    np.testing.assert_allclose(jitted(jnp.asarray([False, True])), expected, atol=1e-5)


def test_extracted_successor_model_equals_the_evaluation_forward():
    model, params, method, ids = _setup()
    _, state = method.init(params, RNGS)
    seen, interventions = method.present(params, state, 0, False)
    np.testing.assert_array_equal(interventions.replace.use_successor, [True, True])
    assert interventions.replace.modules == ((0, 1), (2, 3))
    replaced = model.apply({"params": seen}, ids, interventions=interventions)[0]
    small_params, small_config = method.finalize(params, state, model.config)
    assert small_config.num_hidden_layers == 2
    assert set(small_params["bert"]["encoder"]) == {"layer"}
    small = model.clone(config=small_config)
    out = small.apply({"params": small_params}, ids)[0]
    np.testing.assert_allclose(out["logits"], replaced["logits"], atol=1e-5)
    plain = model.apply({"params": params}, ids)[0]["logits"]
    assert not np.allclose(out["logits"], plain, atol=1e-5)


def test_replacement_frequency_follows_the_schedule():
    assert float(replace_rate("linear", 0.3, 0.1, 4)) == pytest.approx(0.7)
    assert float(replace_rate("linear", 0.3, 0.1, 100)) == 1.0
    with pytest.raises(ValueError, match="unknown replacing schedule"):
        replace_rate("cosine", 0.5, 0.0, 0)
    with pytest.raises(ValueError, match="do not split"):
        ModuleReplacing(num_layers=6, successors=4)
    for schedule, rate, slope in (("constant", 0.3, 0.0), ("linear", 0.0, 1 / 400)):
        method = ModuleReplacing(
            num_layers=6, successors=3, schedule=schedule, rate=rate, slope=slope
        )
        _, state = method.init(
            {"bert": {"encoder": {"layer": {str(i): {} for i in range(6)}}}}, RNGS
        )

        def gate(step, method=method, state=state):
            return method.present({}, state, step, True)[1].replace.use_successor

        gates = np.asarray(jax.vmap(gate)(jnp.arange(400)), np.float32)
        # The gate is a function of the state and the step: the same step, the same gate.
        np.testing.assert_array_equal(jax.vmap(gate)(jnp.arange(400)), gates)
        observed = gates.mean(1)
        expected = np.asarray([float(method.rate_at(s)) for s in range(400)])
        # Mean over steps: within ~4 sigma of the scheduled rate.
        assert abs(observed.mean() - expected.mean()) < 4 * np.sqrt(0.25 / (400 * 3))
        if schedule == "linear":  # later steps replace more often
            assert observed[300:].mean() > observed[:100].mean() + 0.3
        # Modules draw independently: not all three always together.
        assert 0 < np.mean(gates.sum(1) % 3 != 0)


def test_from_config_and_report():
    block = ml_collections.ConfigDict(
        dict(successors=2, schedule="linear", rate=0.5, ramp_fraction=0.5, init_from="first")
    )
    method = ModuleReplacing.from_config(block, Context(total_steps=20, model=CONFIG))
    assert (method.num_layers, method.successors, method.total_steps) == (4, 2, 20)
    assert method.slope == pytest.approx(0.5 / 10)
    assert method.name == "theseus_linear"
    assert method.report(None, None) == {"successor_layers": 2, "final_replace_rate": 1.0}
    _, config = method.finalize(
        {"bert": {"encoder": {"successor": {"0": {}, "1": {}}}}}, None, CONFIG
    )
    assert config == CONFIG.with_layers((0, 1))


def test_train_step_trains_only_successors():
    model, params, method, ids = _setup(init_from="first")
    train = ml_collections.ConfigDict(
        dict(learning_rate=1e-2, warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0)
    )
    tx = method.wrap_optimizer(make_optimizer(train, 10), params)
    _, method_state = method.init(params, {"state": jax.random.key(2), "params": None})
    state = TrainState.create(params, tx, 0, method_state=method_state)
    batch = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
        "labels": np.zeros(2, np.int32),
        "weights": np.ones(2, np.float32),
    }
    step = jax.jit(
        chex.assert_max_traces(steps.train_step_fn(model, regression=False, method=method), n=1)
    )
    before = jax.tree_util.tree_map(np.array, params)
    for _ in range(3):
        state, _ = step(state, batch)
    after = jax.device_get(state.params)
    chex.assert_trees_all_equal(
        before["bert"]["encoder"]["layer"], after["bert"]["encoder"]["layer"]
    )
    chex.assert_trees_all_equal(before["classifier"], after["classifier"])
    changed = jax.tree_util.tree_map(
        lambda a, b: not np.array_equal(a, b),
        before["bert"]["encoder"]["successor"],
        after["bert"]["encoder"]["successor"],
    )
    assert any(jax.tree_util.tree_leaves(changed))
    # The state holds only the key: the step comes as an argument.
    chex.assert_trees_all_equal(state.method_state, method_state)
