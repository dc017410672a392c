"""Structured pruning of attention heads and FFN neurons, and its physical removal.

Importance (per head, per neuron):
  "gradient": |dL/d mask| accumulated over training steps up to `prune_step`
      (Michel et al. 2019). At mask = 1 it equals sum(dL/dW * W) over the rows
      of the weight the unit feeds (the attention output rows of a head, the
      FFN output rows of a neuron), so it is read off the parameter gradients.
  "weight_norm": L2 norm of the unit's weights (q/k/v columns and output rows
      of a head; input column times output row of a neuron), at `prune_step`.
Budgets: "layer" removes floor(sparsity * units) in every layer; "global"
ranks units of all layers together (scores normalised per layer, at least one
head kept per layer). Masks reach the model as the `head_mask` / `ffn_mask`
interventions; `finalize` slices the weights and returns a smaller config.

A factorized kernel (`{"u": [in, r], "v": [r, out]}`, `methods/lowrank/`) is pruned as
its product: rows of W = u @ v are rows of u, columns are columns of v, so the gradient
importance reads u and its gradient (sum(dL/dW * W) over a row = sum(dL/du * u) over it),
weight norms multiply the factors out, and `finalize` slices u's rows or v's columns
(the rank stays).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models import convert, layout
from bertjax.models.interventions import Interventions
from bertjax.models.layout import head_columns
from methods.base import Method, fields_from
from methods.pruning.masks import keep_mask, recompute_on


def _layers(params) -> dict:
    return params["bert"]["encoder"]["layer"]


def _row_factor(kernel):
    """What the rows of a kernel live in: the kernel itself, or a factorized one's u."""
    return kernel[convert.U] if convert.is_factorized(kernel) else kernel


def _dense(kernel):
    """The kernel as one [in, out] array (a factorized one multiplied out)."""
    if convert.is_factorized(kernel):
        return kernel[convert.U] @ kernel[convert.V]
    return kernel


def _out_width(kernel) -> int:
    return (kernel[convert.V] if convert.is_factorized(kernel) else kernel).shape[1]


def _take_rows(kernel, rows):
    if convert.is_factorized(kernel):
        return {convert.U: kernel[convert.U][rows], convert.V: kernel[convert.V]}
    return kernel[rows]


def _take_columns(kernel, columns):
    if convert.is_factorized(kernel):
        return {convert.U: kernel[convert.U], convert.V: kernel[convert.V][:, columns]}
    return kernel[:, columns]


def _by_head(x: jax.Array, num_heads: int, axis: int) -> jax.Array:
    """Splits `axis` of a [.., heads*dim, ..] array into [heads, dim] (heads first)."""
    x = jnp.moveaxis(x, axis, 0)
    return x.reshape(num_heads, -1, *x.shape[1:])


@dataclasses.dataclass(frozen=True)
class StructuredPruning(Method):
    num_heads: int
    head_sparsity: float = 0.0
    ffn_sparsity: float = 0.0
    importance: str = "gradient"
    scope: str = "layer"
    prune_step: int = 1

    @classmethod
    def from_config(cls, block, context):
        # Masks are set once `prune_step` updates are done; gradient importance needs >= 1.
        step = context.steps(block.prune_fraction)
        step = max(step, 1 if block.importance == "gradient" else 0)
        heads = context.model.num_attention_heads
        return cls(**fields_from(cls, block, num_heads=heads, prune_step=step))

    @property
    def name(self) -> str:
        return "prune_structured"

    def __post_init__(self):
        if self.importance not in ("gradient", "weight_norm"):
            raise ValueError(
                f"unknown importance {self.importance!r}; known: gradient, weight_norm"
            )
        if self.scope not in ("layer", "global"):
            raise ValueError(f"unknown scope {self.scope!r}; known: layer, global")
        if self.importance == "gradient" and self.prune_step < 1:
            raise ValueError("gradient importance needs prune_step >= 1 to accumulate over")

    # -- importance -------------------------------------------------------------
    def _gradient_scores(self, params, grads):
        heads, neurons = [], []
        for key in sorted(_layers(params), key=int):
            p, g = _layers(params)[key], _layers(grads)[key]
            wo, go = (
                _row_factor(p["attention"]["output"]["dense"]["kernel"]),
                _row_factor(g["attention"]["output"]["dense"]["kernel"]),
            )
            heads.append(jnp.abs(jnp.sum(_by_head(wo * go, self.num_heads, 0), axis=(1, 2))))
            w2 = _row_factor(p["output"]["dense"]["kernel"])
            g2 = _row_factor(g["output"]["dense"]["kernel"])
            neurons.append(jnp.abs(jnp.sum(w2 * g2, axis=1)))
        return jnp.stack(heads), jnp.stack(neurons)

    def _weight_norm_scores(self, params):
        heads, neurons = [], []
        for key in sorted(_layers(params), key=int):
            p = _layers(params)[key]
            attention = p["attention"]
            squares = sum(
                jnp.sum(
                    _by_head(_dense(attention["self"][n]["kernel"]) ** 2, self.num_heads, 1),
                    axis=(1, 2),
                )
                for n in ("query", "key", "value")
            )
            squares = squares + jnp.sum(
                _by_head(_dense(attention["output"]["dense"]["kernel"]) ** 2, self.num_heads, 0),
                axis=(1, 2),
            )
            heads.append(jnp.sqrt(squares))
            neurons.append(
                jnp.linalg.norm(_dense(p["intermediate"]["dense"]["kernel"]), axis=0)
                * jnp.linalg.norm(_dense(p["output"]["dense"]["kernel"]), axis=1)
            )
        return jnp.stack(heads), jnp.stack(neurons)

    def _masks(self, head_scores, ffn_scores):
        return (
            self._budget(head_scores, self.head_sparsity, keep_one=True),
            self._budget(ffn_scores, self.ffn_sparsity, keep_one=False),
        )

    def _budget(self, scores, sparsity, keep_one: bool):
        if sparsity == 0.0:
            return jnp.ones_like(scores)
        if self.scope == "layer":
            return jax.vmap(lambda s: keep_mask(s, sparsity))(scores)
        scores = scores / jnp.maximum(jnp.linalg.norm(scores, axis=1, keepdims=True), 1e-12)
        if keep_one:  # a layer keeps its best head whatever the budget
            best = jnp.argmax(scores, axis=1)
            scores = scores.at[jnp.arange(scores.shape[0]), best].set(jnp.inf)
        return keep_mask(scores, sparsity)

    # -- protocol ----------------------------------------------------------------
    def init(self, params, rngs):
        layers = len(_layers(params))
        width = _out_width(_layers(params)["0"]["intermediate"]["dense"]["kernel"])
        state = {
            "head_mask": jnp.ones((layers, self.num_heads)),
            "ffn_mask": jnp.ones((layers, width)),
            "head_scores": jnp.zeros((layers, self.num_heads)),
            "ffn_scores": jnp.zeros((layers, width)),
        }
        if self.importance == "weight_norm" and self.prune_step == 0:
            state["head_mask"], state["ffn_mask"] = self._masks(*self._weight_norm_scores(params))
        return params, state

    def present(self, params, state, step, train):
        return params, Interventions(head_mask=state["head_mask"], ffn_mask=state["ffn_mask"])

    def update(self, state, params, grads, aux, step):
        if grads is None:
            return state
        done = step + 1  # updates finished
        state = dict(state)
        if self.importance == "gradient":
            heads, neurons = self._gradient_scores(params, grads)
            accumulate = done <= self.prune_step
            state["head_scores"] = state["head_scores"] + jnp.where(accumulate, heads, 0.0)
            state["ffn_scores"] = state["ffn_scores"] + jnp.where(accumulate, neurons, 0.0)

        def masks():
            scores = (
                (state["head_scores"], state["ffn_scores"])
                if self.importance == "gradient"
                else self._weight_norm_scores(params)
            )
            return self._masks(*scores)

        # The sorts run only at `prune_step` (lax.cond), not in every step.
        state["head_mask"], state["ffn_mask"] = recompute_on(
            done == self.prune_step, masks, (state["head_mask"], state["ffn_mask"])
        )
        return state

    def finalize(self, params, state, config):
        """Slices away masked heads and neurons; returns params and a smaller config."""
        if any(config.pruned_heads) or config.intermediate_sizes:
            raise ValueError("finalize expects a model without earlier structural pruning")
        head_mask = np.asarray(state["head_mask"]) > 0
        ffn_mask = np.asarray(state["ffn_mask"]) > 0
        params = jax.tree_util.tree_map(np.asarray, params)
        layers = {}
        for key, layer in _layers(params).items():
            i = int(key)
            layers[key] = slice_layer(
                layer, np.flatnonzero(head_mask[i]), np.flatnonzero(ffn_mask[i]), self.num_heads
            )
        params = layout.with_layers(params, layers)
        widths = tuple(int(m.sum()) for m in ffn_mask)
        config = dataclasses.replace(
            config,
            pruned_heads=tuple(tuple(int(h) for h in np.flatnonzero(~m)) for m in head_mask),
            intermediate_size=max(widths),
            intermediate_sizes=() if len(set(widths)) == 1 else widths,
        )
        return params, config

    def report(self, params, state):
        return {
            "heads_kept": int(np.sum(np.asarray(state["head_mask"]) > 0)),
            "ffn_neurons_kept": int(np.sum(np.asarray(state["ffn_mask"]) > 0)),
        }


def slice_layer(layer: dict, heads: np.ndarray, neurons: np.ndarray, num_heads: int) -> dict:
    """One layer's params keeping only `heads` (original indices) and FFN `neurons`."""
    attention = layer["attention"]
    dim = _out_width(attention["self"]["query"]["kernel"]) // num_heads
    columns = head_columns(heads, dim)
    projections = {
        name: {
            "kernel": _take_columns(attention["self"][name]["kernel"], columns),
            "bias": attention["self"][name]["bias"][columns],
        }
        for name in ("query", "key", "value")
    }
    output = dict(attention["output"])
    output["dense"] = {
        "kernel": _take_rows(output["dense"]["kernel"], columns),
        "bias": output["dense"]["bias"],
    }
    ffn_in = layer["intermediate"]["dense"]
    ffn_out = dict(layer["output"])
    ffn_out["dense"] = {
        "kernel": _take_rows(ffn_out["dense"]["kernel"], neurons),
        "bias": ffn_out["dense"]["bias"],
    }
    return {
        "attention": {"self": projections, "output": output},
        "intermediate": {
            "dense": {
                "kernel": _take_columns(ffn_in["kernel"], neurons),
                "bias": ffn_in["bias"][neurons],
            }
        },
        "output": ffn_out,
    }
