"""Exact Earth Mover's Distance inside a jitted step, for BERT-EMD (Li et al. 2020).

BERT-EMD maps M teacher layers (masses `supply` [M]) onto N student layers
(masses `demand` [N]) by the optimal flow F [M, N] of Rubner's EMD on a ground
distance D [M, N]:

    min sum(F * D)  s.t.  F >= 0,  F.sum(1) <= supply,  F.sum(0) <= demand,
                          F.sum() = min(supply.sum(), demand.sum()).

The reference code solves this on the host with pyemd; here it is a
transportation simplex written with `lax.while_loop`, so it runs in the train
step on any backend with static shapes. A zero-cost dummy row and column absorb
the excess mass, which turns the problem into a balanced one (equalities).

Algorithm: dense tableau simplex over the (M+1) x (N+1) cells, one artificial
variable per constraint, phases 1 and 2 in a single loop (each column is priced
on the phase-1 reduced cost first, then on the cost). Pricing is Dantzig's
(most negative reduced cost) and switches for good to Bland's smallest-index
rule after a run of degenerate pivots, which rules out cycling on this very
degenerate LP. The constraint matrix is totally unimodular, so every pivot
element is exactly 1 and the tableau's constraint part stays integral in
float32; only the right-hand side and the cost row accumulate rounding. A 24 x 24
problem takes about 400 pivots (5 ms on one CPU core), 12 x 4 about 60.
"""

import jax
import jax.numpy as jnp

# Tolerances on the rescaled problem (max |cost| = 1, larger total mass = 1).
_COST_TOLERANCE = 1e-6
_MASS_TOLERANCE = 1e-6


def _balanced_masses(supply: jax.Array, demand: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Appends a dummy row / column mass so both sides total max(sum supply, sum demand)."""
    excess = jnp.sum(supply) - jnp.sum(demand)
    return (
        jnp.append(supply, jnp.maximum(-excess, 0.0)),
        jnp.append(demand, jnp.maximum(excess, 0.0)),
    )


def _initial_tableau(cost: jax.Array, supply: jax.Array, demand: jax.Array) -> jax.Array:
    """Tableau [rows + columns + 2, cells + rows + columns + 1] with the artificials basic.

    Constraint rows are `[incidence | identity | masses]`; the last two rows hold the
    reduced costs and minus the objective of phase 2 (the cost) and of phase 1 (the
    sum of the artificials).
    """
    rows, columns = cost.shape
    row_of_cell = jax.nn.one_hot(jnp.repeat(jnp.arange(rows), columns), rows, axis=0)
    column_of_cell = jax.nn.one_hot(jnp.tile(jnp.arange(columns), rows), columns, axis=0)
    constraints = jnp.concatenate([row_of_cell, column_of_cell])
    masses = jnp.concatenate([supply, demand])
    identity = jnp.eye(rows + columns)
    body = jnp.concatenate([constraints, identity, masses[:, None]], axis=1)
    padding = jnp.zeros(rows + columns)
    phase_two = jnp.concatenate([cost.reshape(-1), padding, jnp.zeros(1)])
    phase_one = jnp.concatenate([-constraints.sum(0), padding, -jnp.sum(masses, keepdims=True)])
    return jnp.concatenate([body, phase_two[None], phase_one[None]])


def _entering(tableau: jax.Array, cells: int, bland: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Entering column and whether one exists; phase 1 until its reduced costs are >= 0."""
    phase_one_costs = tableau[-1, :-1]
    phase_two_costs = tableau[-2, :-1]
    is_cell = jnp.arange(phase_one_costs.shape[0]) < cells
    # Phase-1 reduced costs are integers, so 0.5 separates them exactly.
    improves_phase_one = is_cell & (phase_one_costs < -0.5)
    in_phase_one = jnp.any(improves_phase_one)
    improves_cost = (
        is_cell & (jnp.abs(phase_one_costs) < 0.5) & (phase_two_costs < -_COST_TOLERANCE)
    )
    eligible = jnp.where(in_phase_one, improves_phase_one, improves_cost)
    scores = jnp.where(in_phase_one, phase_one_costs, phase_two_costs)
    dantzig = jnp.argmin(jnp.where(eligible, scores, jnp.inf))
    column = jnp.where(bland, jnp.argmax(eligible), dantzig)
    return column, jnp.any(eligible)


def _pivot(state: tuple, cells: int) -> tuple:
    """One simplex pivot: ratio test (ties to the smallest basic index), then elimination."""
    tableau, basis, iteration, degenerate_run, bland = state
    constraints = basis.shape[0]
    entering, _ = _entering(tableau, cells, bland)
    column = tableau[:constraints, entering]
    right_hand_side = tableau[:constraints, -1]
    positive = column > 0.5  # entries are 0 or +-1 (total unimodularity)
    ratios = jnp.where(positive, right_hand_side / jnp.where(positive, column, 1.0), jnp.inf)
    step = jnp.min(ratios)
    tied = positive & (ratios <= step + _MASS_TOLERANCE)
    leaving = jnp.argmin(jnp.where(tied, basis, jnp.iinfo(basis.dtype).max))
    pivot_row = tableau[leaving] / tableau[leaving, entering]
    tableau = tableau - jnp.outer(tableau[:, entering], pivot_row)
    tableau = tableau.at[leaving].set(pivot_row)
    tableau = tableau.at[:constraints, -1].max(0.0)  # rounding must not make a flow negative
    degenerate_run = jnp.where(step <= _MASS_TOLERANCE, degenerate_run + 1, 0)
    bland = bland | (degenerate_run > constraints)
    return tableau, basis.at[leaving].set(entering), iteration + 1, degenerate_run, bland


def transport(
    cost: jax.Array,
    supply: jax.Array,
    demand: jax.Array,
    *,
    pricing: str = "dantzig",
    max_iterations: int | None = None,
) -> jax.Array:
    """Exact optimal EMD flow [M, N] (float32, no gradient) for cost [M, N], masses [M], [N].

    Masses must be non-negative. Unequal totals move min(totals) of mass, each row
    and column at most its own mass. Jittable with static shapes and vmappable.
    `pricing` is "dantzig" (falls back to Bland after a degenerate run) or "bland"
    (smallest index throughout: provably finite, more pivots). `max_iterations`
    (default 50 * (M + 1) * (N + 1)) only guards against a runaway loop; the flow
    returned at the bound is feasible but may not be optimal.
    """
    if pricing not in ("dantzig", "bland"):
        raise ValueError(f"unknown pricing {pricing!r}; known: dantzig, bland")
    cost = jax.lax.stop_gradient(jnp.asarray(cost, jnp.float32))
    supply = jax.lax.stop_gradient(jnp.asarray(supply, jnp.float32))
    demand = jax.lax.stop_gradient(jnp.asarray(demand, jnp.float32))
    # Rescaling makes the tolerances absolute; the optimal flow is unchanged.
    cost_scale = jnp.max(jnp.abs(cost))
    cost = cost / jnp.where(cost_scale > 0, cost_scale, 1.0)
    mass_scale = jnp.maximum(jnp.sum(supply), jnp.sum(demand))
    mass_scale = jnp.where(mass_scale > 0, mass_scale, 1.0)
    supply, demand = _balanced_masses(supply / mass_scale, demand / mass_scale)
    cost = jnp.pad(cost, ((0, 1), (0, 1)))
    rows, columns = cost.shape
    cells = rows * columns
    if max_iterations is None:
        max_iterations = 50 * cells

    def not_optimal(state):
        tableau, _, iteration, _, bland = state
        return (iteration < max_iterations) & _entering(tableau, cells, bland)[1]

    initial = (
        _initial_tableau(cost, supply, demand),
        cells + jnp.arange(rows + columns, dtype=jnp.int32),
        jnp.int32(0),
        jnp.int32(0),
        jnp.bool_(pricing == "bland"),
    )
    tableau, basis, *_ = jax.lax.while_loop(
        not_optimal, lambda state: _pivot(state, cells), initial
    )
    values = jnp.zeros(tableau.shape[1] - 1).at[basis].set(tableau[: basis.shape[0], -1])
    flow = values[:cells].reshape(rows, columns)[:-1, :-1] * mass_scale
    return jax.lax.stop_gradient(flow)


def emd_loss(cost: jax.Array, supply: jax.Array, demand: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(EMD, flow): sum(flow * cost) / sum(flow), differentiable in cost with the flow fixed.

    The gradient w.r.t. cost is flow / sum(flow), as with the host-side pyemd flow
    of the reference. With equal unit totals (the paper's case) this equals its
    loss sum(flow * cost). A flow of zero total gives a loss of 0.
    """
    flow = transport(cost, supply, demand)
    total = jnp.sum(flow)
    loss = jnp.sum(flow * cost) / jnp.where(total > 0, total, 1.0)
    return loss, flow


def _inverse_cost_scores(transported: jax.Array, masses: jax.Array) -> jax.Array:
    """sum(c) / c_i for per-unit costs c_i = transported_i / mass_i; 0 where c_i = 0."""
    unit_cost = jnp.where(masses > 0, transported / jnp.where(masses > 0, masses, 1.0), 0.0)
    positive = unit_cost > 0
    return jnp.where(positive, jnp.sum(unit_cost) / jnp.where(positive, unit_cost, 1.0), 0.0)


def _normalise(scores: jax.Array, temperature: float | None) -> jax.Array:
    """softmax(scores / temperature), or scores / sum(scores) (uniform if all 0) for None."""
    if temperature is not None:
        return jax.nn.softmax(scores / temperature)
    total = jnp.sum(scores)
    uniform = jnp.full_like(scores, 1.0 / scores.shape[0])
    return jnp.where(total > 0, scores / jnp.where(total > 0, total, 1.0), uniform)


def update_weights(
    flow: jax.Array,
    cost: jax.Array,
    supply: jax.Array,
    demand: jax.Array,
    temperature: float | None = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """BERT-EMD "cost attention": new (supply [M], demand [N]) layer weights, no gradient.

    Per-layer cost per unit of mass, C_T_i = sum_j F_ij D_ij / w_T_i and
    C_S_j = sum_i F_ij D_ij / w_S_j; score s_i = sum_k C_k / C_i (cheaper layers
    score higher); new weights softmax(s / temperature) over each side. This is
    `get_new_layer_weight` in lxk00/BERT-EMD `bert-emd/emd_task_distill.py`
    (commit 3d6bd37; temperature is their `--T_emd`, default 1). The other copy,
    `bert_emd/emd_task_distill.py` (commit 634df29), ignores T and uses s / sum(s):
    pass `temperature=None` for that. As in both, a layer with zero cost scores 0, the
    lowest, rather than infinity; so does a layer of zero mass (NaN in the reference).
    """
    transported = jax.lax.stop_gradient(flow * cost)
    supply_scores = _inverse_cost_scores(jnp.sum(transported, 1), supply)
    demand_scores = _inverse_cost_scores(jnp.sum(transported, 0), demand)
    return jax.lax.stop_gradient(
        (_normalise(supply_scores, temperature), _normalise(demand_scores, temperature))
    )
