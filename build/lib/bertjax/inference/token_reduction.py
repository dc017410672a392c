"""Token-reduced inference (TR-BERT): later layers really run on fewer tokens.

Training drops tokens as a key mask of fixed shape (`Interventions.tokens`); here the
kept tokens are gathered so that each segment of layers runs on a shorter sequence:

  T0 = bucket(longest real row)            inputs trimmed to T0 (the dense baseline too)
  embed, layers [0, s1)     on T0 tokens   then selection 1: keep = p >= 0.5 or [CLS]
  Tk = bucket(most tokens kept in a row)   host reads the count (one small transfer)
  gather (lax.top_k of a score that puts [CLS] first and kept tokens next, in order),
  layers [sk, sk+1)         on Tk tokens   then selection k+1, ... then the head

Each segment is one jitted function with its output length static, so there is one
executable per (segment, batch size, input length, output length), compiled once
(`traces` counts them). Rows of a batch keep different counts: the segment runs on the
batch's largest, the others' surplus positions are masked keys, as padding is.
`dense` is the unreduced model with the same input bucketing: the fair baseline
(TR-BERT's own evaluation trims padding too).
"""

import bisect
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models import checkpoints, convert, staged
from bertjax.models.interventions import NONE, Interventions, TokenSelection
from methods.dynamic.token_reduction import POLICY, policy_probability

BUCKETS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def bucket_of(count: int, buckets=BUCKETS) -> int:
    """The smallest bucket >= `count` (the largest bucket when none is)."""
    position = bisect.bisect_left(buckets, count)
    return buckets[min(position, len(buckets) - 1)]


def gather_kept(x: jax.Array, keep: jax.Array, length: int):
    """`(x [B, length, H], keep [B, length])`: per row, [CLS] then the kept tokens in
    order, then (if fewer than `length` are kept) dropped ones, masked by `keep`."""
    positions = jnp.arange(keep.shape[-1])
    score = jnp.where(keep, 2 * keep.shape[-1] - positions, -positions)
    _, index = jax.lax.top_k(score, length)
    return (
        jnp.take_along_axis(x, index[..., None], axis=1),
        jnp.take_along_axis(keep, index, axis=1),
    )


def load(
    directory: str | Path,
    *,
    head: str = "classification",
    threshold: float = 0.5,
    buckets=BUCKETS,
    interventions: Interventions = NONE,
) -> "ReducedForward":
    """The reduced model of a TR-BERT export: its weights, and its policy nets from the
    `token_policy.{layer}.*` side tree (the keys name the layers they select before);
    ValueError for an export without them."""
    model, params = checkpoints.load_pretrained(directory, head=head)
    policy = convert.side_tree(checkpoints.read_state_dict(Path(directory)), POLICY)
    if policy is None:
        raise ValueError(f"{directory} has no token policy ({POLICY}.* in its safetensors)")
    layers = tuple(sorted(int(layer) for layer in policy))
    selection = TokenSelection(
        layers=layers,
        policy=policy_probability,
        params=tuple(jax.tree.map(jnp.asarray, policy[str(layer)]) for layer in layers),
        threshold=threshold,
    )
    return ReducedForward(model, params, selection, buckets, interventions)


class ReducedForward:
    """`model` with token reduction `selection` (eval mode: probability >= threshold),
    as segments of layers on gathered tokens. `__call__(ids, mask, types)` returns
    `(logits [B, labels], kept [B, S] tokens kept per selection)`."""

    def __init__(
        self,
        model,
        params,
        selection: TokenSelection,
        buckets=BUCKETS,
        interventions: Interventions = NONE,
    ):
        self.model, self.params, self.selection = model, params, selection
        self.interventions = interventions
        num_layers = staged.num_layers(params)
        self.buckets = tuple(b for b in buckets if b <= model.config.max_position_embeddings)
        bounds = (0, *selection.layers, num_layers)
        self.segments = tuple(zip(bounds[:-1], bounds[1:], strict=True))
        # (segment, batch rows, input length, output length) -> times traced
        self.traces: Counter = Counter()
        self._first = jax.jit(self._run_first)
        self._later = jax.jit(self._run_later, static_argnums=(0, 4))
        self._dense = jax.jit(self._run_dense)

    def _layers(self, params, x, keep, segment):
        bias = staged.attention_bias(keep.astype(jnp.int32))
        for i in range(*self.segments[segment]):
            x = staged.layer(self.model, params, i, x, bias, self.interventions)
        return x

    def _run_first(self, params, selection_params, ids, mask, types):
        self.traces[(0, *ids.shape, ids.shape[1])] += 1
        x, _ = staged.embed(self.model, params, ids, mask, types)
        keep = mask > 0
        x = self._layers(params, x, keep, 0)
        return (x, *self._select_with(selection_params, 0, x, keep))

    def _select_with(self, selection_params, j, x, keep):
        selection = self.selection.replace(params=selection_params)
        keep, _ = selection.select(j, x, keep)
        return keep, jnp.max(jnp.sum(keep, -1)), jnp.sum(keep, -1)

    def _run_later(self, segment, params, selection_params, x, length, keep):
        self.traces[(segment, *x.shape[:2], length)] += 1
        x, keep = gather_kept(x, keep, length)
        x = self._layers(params, x, keep, segment)
        if segment == len(self.segments) - 1:
            return staged.head(self.model, params, x, self.interventions)
        return (x, *self._select_with(selection_params, segment, x, keep))

    def _run_dense(self, params, ids, mask, types):
        x, bias = staged.embed(self.model, params, ids, mask, types)
        for i in range(staged.num_layers(params)):
            x = staged.layer(self.model, params, i, x, bias, self.interventions)
        return staged.head(self.model, params, x, self.interventions)

    def trim(self, ids, mask, types):
        """Inputs cut to the bucket of their longest real row (host arrays)."""
        mask = np.asarray(mask)
        length = bucket_of(int(mask.sum(-1).max()), self.buckets)
        pad = max(0, length - mask.shape[1])
        cut = [np.pad(np.asarray(a)[:, :length], ((0, 0), (0, pad))) for a in (ids, mask, types)]
        return tuple(cut)

    def __call__(self, ids, mask, types):
        ids, mask, types = self.trim(ids, mask, types)
        params, selection_params = self.params, self.selection.params
        x, keep, most, kept = self._first(params, selection_params, ids, mask, types)
        counts = [kept]
        for segment in range(1, len(self.segments)):
            length = min(bucket_of(int(most), self.buckets), x.shape[1])
            out = self._later(segment, params, selection_params, x, length, keep)
            if segment == len(self.segments) - 1:
                return out, jnp.stack(counts, -1)
            x, keep, most, kept = out
            counts.append(kept)
        raise AssertionError("a selection needs at least one later segment")

    def dense(self, ids, mask, types):
        """Logits of the unreduced model on the same bucketed inputs."""
        return self._dense(self.params, *self.trim(ids, mask, types))

    def executed_lengths(self, ids, mask, types) -> list[int]:
        """The sequence length each segment runs at for this batch (for FLOPs)."""
        _, kept = self(ids, mask, types)
        ids, _, _ = self.trim(ids, mask, types)
        lengths = [ids.shape[1]]
        for j in range(kept.shape[-1]):
            lengths.append(min(bucket_of(int(np.max(kept[:, j])), self.buckets), lengths[-1]))
        return lengths
