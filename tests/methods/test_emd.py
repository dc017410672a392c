"""In-graph EMD: optimal flows against scipy's HiGHS, loss gradient, BERT-EMD weight update."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog
from scipy.special import softmax

from methods.distill import emd

SIZES = [(6, 3), (6, 2), (12, 4), (4, 6), (1, 5)]
MASSES = ["uniform", "random", "unequal_totals"]

transport = jax.jit(emd.transport)


def _reference_flow(cost, supply, demand):
    """Rubner's EMD as an LP: rows <= supply, columns <= demand, total = min of totals."""
    cost, supply, demand = (np.asarray(a, np.float64) for a in (cost, supply, demand))
    rows, columns = cost.shape
    row_sums = np.kron(np.eye(rows), np.ones((1, columns)))
    column_sums = np.kron(np.ones((1, rows)), np.eye(columns))
    result = linprog(
        cost.ravel(),
        A_ub=np.concatenate([row_sums, column_sums]),
        b_ub=np.concatenate([supply, demand]),
        A_eq=np.ones((1, rows * columns)),
        b_eq=[min(supply.sum(), demand.sum())],
        method="highs",
    )
    assert result.status == 0
    return result.x.reshape(rows, columns), result.fun


def _masses(rng, rows, columns, kind):
    if kind == "uniform":
        return np.full(rows, 1 / rows), np.full(columns, 1 / columns)
    supply, demand = rng.uniform(0.1, 1.0, rows), rng.uniform(0.1, 1.0, columns)
    if kind == "random":
        return supply / supply.sum(), demand / demand.sum()
    return supply, demand * 1.7  # totals differ, either side may be the larger


def _assert_feasible(flow, supply, demand, atol=1e-5):
    flow = np.asarray(flow)
    assert flow.dtype == np.float32
    assert np.all(flow >= 0)
    assert np.all(flow.sum(1) <= supply + atol)
    assert np.all(flow.sum(0) <= demand + atol)
    np.testing.assert_allclose(flow.sum(), min(supply.sum(), demand.sum()), atol=atol)


@pytest.mark.parametrize("kind", MASSES)
@pytest.mark.parametrize("rows,columns", SIZES)
def test_transport_matches_linprog(rows, columns, kind):
    rng = np.random.default_rng(rows * 100 + columns)
    for _ in range(3):
        cost = rng.uniform(0.0, 2.0, (rows, columns)).astype(np.float32)
        supply, demand = (m.astype(np.float32) for m in _masses(rng, rows, columns, kind))
        expected_flow, expected_objective = _reference_flow(cost, supply, demand)
        flow = transport(cost, supply, demand)
        _assert_feasible(flow, supply, demand)
        np.testing.assert_allclose(np.sum(flow * cost), expected_objective, rtol=1e-5)
        np.testing.assert_allclose(flow, expected_flow, atol=1e-4)


def test_bland_pricing_and_larger_problem_match_linprog():
    rng = np.random.default_rng(7)
    cost = rng.uniform(size=(24, 24)).astype(np.float32)
    supply, demand = (m.astype(np.float32) for m in _masses(rng, 24, 24, "unequal_totals"))
    expected_flow, expected_objective = _reference_flow(cost, supply, demand)
    for pricing in ("dantzig", "bland"):
        flow = jax.jit(functools.partial(emd.transport, pricing=pricing))(cost, supply, demand)
        _assert_feasible(flow, supply, demand)
        np.testing.assert_allclose(np.sum(flow * cost), expected_objective, rtol=1e-5)
        np.testing.assert_allclose(flow, expected_flow, atol=1e-4)
    with pytest.raises(ValueError, match="unknown pricing"):
        emd.transport(cost, supply, demand, pricing="steepest")


@pytest.mark.parametrize(
    "name", ["zero_cost", "identical_rows", "integer_ties", "one_by_one", "zero_masses"]
)
def test_degenerate_problems_stay_feasible_and_optimal(name):
    rng = np.random.default_rng(3)
    supply, demand = np.full(6, 1 / 6, np.float32), np.full(4, 1 / 4, np.float32)
    if name == "zero_cost":
        cost = np.zeros((6, 4), np.float32)
    elif name == "identical_rows":
        cost = np.tile(rng.uniform(size=(1, 4)), (6, 1)).astype(np.float32)
    elif name == "integer_ties":
        cost = rng.integers(0, 3, (6, 4)).astype(np.float32)
    elif name == "one_by_one":
        cost, supply, demand = (
            np.full((1, 1), 0.3, np.float32),
            np.ones(1, np.float32),
            np.ones(1, np.float32) * 0.4,
        )
    else:
        cost = rng.uniform(size=(6, 4)).astype(np.float32)
        supply, demand = supply * np.asarray([1, 0, 1, 0, 1, 1], np.float32), demand * 0
    flow = transport(cost, supply, demand)
    _assert_feasible(flow, supply, demand)
    _, expected_objective = _reference_flow(cost, supply, demand)
    np.testing.assert_allclose(np.sum(flow * cost), expected_objective, rtol=1e-5, atol=1e-7)


def test_emd_loss_gradient_is_normalised_flow():
    rng = np.random.default_rng(11)
    cost = jnp.asarray(rng.uniform(size=(12, 4)), jnp.float32)
    supply, demand = (jnp.asarray(m, jnp.float32) for m in _masses(rng, 12, 4, "unequal_totals"))
    loss, flow = jax.jit(emd.emd_loss)(cost, supply, demand)
    np.testing.assert_allclose(loss, np.sum(flow * cost) / np.sum(flow), rtol=1e-6)
    gradient = jax.jit(jax.grad(lambda c: emd.emd_loss(c, supply, demand)[0]))(cost)
    assert np.all(np.isfinite(gradient))
    np.testing.assert_allclose(gradient, flow / np.sum(flow), rtol=1e-6, atol=1e-8)
    empty_loss, empty_flow = emd.emd_loss(cost, jnp.zeros(12), demand)
    assert float(empty_loss) == 0.0 and not np.any(empty_flow)


def _reference_weights(flow, cost, masses, temperature):
    """Loop form of BERT-EMD's `get_new_layer_weight` for one side (rows of `flow`)."""
    transported = np.sum(flow * cost, axis=1)
    unit_cost = transported / masses
    scores = np.where(unit_cost != 0, unit_cost.sum() / np.where(unit_cost != 0, unit_cost, 1), 0)
    return scores / scores.sum() if temperature is None else softmax(scores / temperature)


@pytest.mark.parametrize("temperature", [1.0, 5.0, None])
def test_update_weights_matches_reference_and_favours_cheap_layers(temperature):
    rng = np.random.default_rng(5)
    cost = rng.uniform(0.5, 2.0, (6, 3)).astype(np.float32)
    supply, demand = _masses(rng, 6, 3, "random")
    flow = np.asarray(transport(cost, supply.astype(np.float32), demand.astype(np.float32)))
    new_supply, new_demand = emd.update_weights(flow, cost, supply, demand, temperature)
    for new, reference in (
        (new_supply, _reference_weights(flow, cost, supply, temperature)),
        (new_demand, _reference_weights(flow.T, cost.T, demand, temperature)),
    ):
        np.testing.assert_allclose(new, reference, rtol=1e-5)
        assert np.all(np.asarray(new) >= 0)
        np.testing.assert_allclose(np.sum(new), 1.0, rtol=1e-6)
    unit_cost = np.sum(flow * cost, axis=1) / supply
    order = np.argsort(unit_cost)
    assert np.all(np.diff(np.asarray(new_supply)[order]) <= 1e-7), "cheaper must weigh more"


def test_update_weights_handles_zero_cost_and_carries_no_gradient():
    flow = np.full((2, 2), 0.25, np.float32)
    cost = np.asarray([[0.0, 0.0], [1.0, 3.0]], np.float32)
    masses = np.full(2, 0.5, np.float32)
    new_supply, new_demand = emd.update_weights(flow, cost, masses, masses, None)
    np.testing.assert_allclose(new_supply, [0.0, 1.0])  # the reference's guard: zero cost scores 0
    np.testing.assert_allclose(new_demand, [0.75, 0.25])
    uniform, _ = emd.update_weights(flow, np.zeros((2, 2)), masses, masses, None)
    np.testing.assert_allclose(uniform, [0.5, 0.5])
    gradient = jax.grad(lambda c: emd.update_weights(flow, c, masses, masses)[0][1])(cost)
    assert not np.any(gradient)


def test_vmap_matches_loop():
    rng = np.random.default_rng(2)
    cost = rng.uniform(size=(4, 6, 3)).astype(np.float32)
    supply, demand = np.full((4, 6), 1 / 6, np.float32), rng.uniform(0.1, 1, (4, 3))
    demand = (demand / demand.sum(1, keepdims=True)).astype(np.float32)
    batched = jax.jit(jax.vmap(emd.transport))(cost, supply, demand)
    for index in range(4):
        np.testing.assert_allclose(
            batched[index], transport(cost[index], supply[index], demand[index]), atol=1e-6
        )


def test_step_traces_once_for_same_shapes():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(cost, supply, demand):
        loss, flow = emd.emd_loss(cost, supply, demand)
        return loss, emd.update_weights(flow, cost, supply, demand, 1.0)

    rng = np.random.default_rng(0)
    supply, demand = jnp.full(6, 1 / 6, jnp.float32), jnp.full(3, 1 / 3, jnp.float32)
    for _ in range(4):
        cost = jnp.asarray(rng.uniform(size=(6, 3)), jnp.float32)
        expected, _ = emd.emd_loss(cost, supply, demand)
        loss, (supply, demand) = step(cost, supply, demand)
        np.testing.assert_allclose(loss, expected, rtol=1e-6)
    chex.clear_trace_counter()
