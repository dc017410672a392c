"""Early-exit inference that really skips the layers after an example's exit.

A model with exit heads (`methods/dynamic/early_exit.py`, exported by a
`configs/early_exit.py` run) runs a layer at a time (`models/staged.py`):
- one example: `single` jits the whole loop — layers in a `lax.while_loop` whose body
  picks layer i and its exit head with `lax.switch`, stopping when the criterion
  fires, so an example that exits at layer k runs k + 1 layers;
- a batch: `batched` runs one executable per layer and batch bucket; after each layer
  the rows that exited leave, and the rest are gathered into the smallest bucket that
  holds them (FastBERT's batched fix), so later layers run on fewer rows. Rows come
  back in their original order.
Both take the criterion's threshold as an argument: one compilation serves a sweep.
`vmap` of `lax.cond` would run every layer for every row; this does not.
"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models import checkpoints, convert, staged
from bertjax.models.interventions import NONE, Interventions
from methods.dynamic import exits
from methods.dynamic.early_exit import EXITS, exit_logits
from methods.quant import storage

# Row buckets of the compacted batches: steps of 4 up to 32 rows, so that a few exits
# already shrink the next layer's batch (powers of two: 0.89-1.10x at batch 32 on MRPC).
BUCKETS = (1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 48, 64, 96, 128)


def load(directory: str | Path, *, head: str = "classification", int8: bool = False):
    """`(model, params)` of an exported early-exit model: the model's params with the
    exit heads under `params["exit_heads"]` (ValueError when the export has none).
    `int8`: the model's Dense kernels and embeddings stored in int8 (as
    `quant_ptq.py:int8=True` stores them; W8A8), the exit heads kept float."""
    model, params = checkpoints.load_pretrained(directory, head=head)
    heads = convert.side_tree(checkpoints.read_state_dict(Path(directory)), EXITS)
    if heads is None:
        raise ValueError(f"{directory} has no exit heads (exit_heads.* in its safetensors)")
    if int8:
        params = storage.quantize_params(params, storage.DEFAULT_SELECT)
    return model, {**params, EXITS: jax.tree.map(jnp.asarray, heads)}


@dataclasses.dataclass
class ExitRunner:
    """A model with exit heads, run a layer at a time (see the module doc)."""

    model: object
    params: dict
    interventions: Interventions = NONE

    def __post_init__(self):
        self.num_layers = staged.num_layers(self.params)
        self.outputs = self.params["classifier"]["bias"].shape[-1]  # logits per example
        self._single = {}
        self._embed = jax.jit(self._embed_fn)
        self._layers = [jax.jit(self._layer_fn(i)) for i in range(self.num_layers)]
        self._gather = jax.jit(lambda x, bias, rows: (x[rows], bias[rows]))

    def _embed_fn(self, params, ids, mask, types):
        return staged.embed(self.model, params, ids, mask, types)

    def head(self, params, i: int, x, bias) -> jax.Array:
        """Layer i's exit logits [B, C] (the model's own head after the last layer);
        `bias` [B, 1, 1, T] is the key mask, which mean-pooled exit heads read."""
        if i == self.num_layers - 1:
            return staged.head(self.model, params, x, self.interventions).astype(jnp.float32)
        return exit_logits(params, i, x, bias[:, 0, 0, :] == 0)

    def _layer_fn(self, i: int):
        def run(params, x, bias):
            x = staged.layer(self.model, params, i, x, bias, self.interventions)
            return x, self.head(params, i, x, bias)

        return run

    # One example (or a batch that exits together): the whole loop in one executable.
    def single(self, criterion: exits.Criterion, ids, mask, types, value=None):
        """`(logits [B, C], exit layer)` of a batch that leaves together at the first layer
        where the criterion fires for every row (batch 1: that example's exit)."""
        key = (criterion.kind, criterion.regression, criterion.delta)
        if key not in self._single:
            self._single[key] = jax.jit(lambda *a: self._loop(criterion, *a))
        value = criterion.value if value is None else value
        logits, layer = self._single[key](self.params, ids, mask, types, jnp.float32(value))
        return logits, int(layer)

    def _loop(self, criterion, params, ids, mask, types, value):
        x, bias = staged.embed(self.model, params, ids, mask, types)
        outputs = self.outputs
        branches = [self._layer_fn(i) for i in range(self.num_layers)]

        def body(state):
            i, x, _, carry, _ = state
            x, logits = jax.lax.switch(i, branches, params, x, bias)
            carry, leave = criterion.step(carry, logits, i, value)
            done = jnp.all(leave) | (i == self.num_layers - 1)
            return i + 1, x, logits, carry, done

        start = (
            jnp.int32(0),
            x,
            jnp.zeros((ids.shape[0], outputs), jnp.float32),
            criterion.init(ids.shape[0], outputs),
            jnp.bool_(False),
        )
        i, _, logits, _, _ = jax.lax.while_loop(lambda s: ~s[-1], body, start)
        return logits, i - 1

    # A batch: rows leave as they exit; the rest run on in smaller buckets.
    def batched(self, criterion: exits.Criterion, ids, mask, types, value=None):
        """`(logits [B, C], exit layers [B])`, each row exiting on its own."""
        value = criterion.value if value is None else value
        b = ids.shape[0]
        x, bias = self._embed(self.params, ids, mask, types)
        rows = np.arange(b)  # original index of each live row
        carry = criterion.init(b, self.outputs)
        out = np.zeros((b, self.outputs), np.float32)
        exit_at = np.full(b, self.num_layers - 1)
        for i in range(self.num_layers):
            x, logits = self._layers[i](self.params, x, bias)
            logits = logits[: len(rows)]
            carry, leave = criterion.step(carry, logits, i, value)
            leave = np.asarray(leave) | (i == self.num_layers - 1)
            out[rows[leave]] = np.asarray(logits)[leave]
            exit_at[rows[leave]] = i
            stay = np.flatnonzero(~leave)
            if not len(stay):
                break
            rows = rows[stay]
            carry = jax.tree.map(lambda c, s=stay: c[s], carry)
            bucket = min([size for size in BUCKETS if size >= len(stay)], default=len(stay))
            index = np.concatenate([stay, np.full(bucket - len(stay), stay[0])])
            x, bias = self._gather(x, bias, jnp.asarray(index))
        return out, exit_at

    def full(self, ids, mask, types):
        """Every layer's logits [B, L, C] (no exit): what `exits.exit_layers` replays."""
        x, bias = self._embed(self.params, ids, mask, types)
        layers = []
        for i in range(self.num_layers):
            x, logits = self._layers[i](self.params, x, bias)
            layers.append(np.asarray(logits))
        return np.stack(layers, axis=1)
