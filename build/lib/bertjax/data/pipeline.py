"""Batches of padded numpy arrays from an `Encoded` split.

Two choices keep a jitted step from recompiling and from wasting compute on
padding:
* the batch size is fixed: a final partial batch is filled with weight-0 rows;
* the padded length is the smallest of a few bucket sizes (multiples of
  `Encoded.bucket_multiple`, 32 by default, and `max_seq_length`) that covers the
  longest row, and rows of similar length are batched together, so most batches are
  short. A finer multiple pads less and compiles more lengths.

Every batch is a dict of numpy arrays:
  input_ids, attention_mask, token_type_ids: [B, T] int32
  labels: [B] int32 or float32 (0 in padding rows)
  weights: [B] float32, 1 for real rows and 0 for padding rows
  index: [B] int32, the example's position in `Encoded`, -1 for padding rows
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from bertjax.data.tokenizer import Encoded

Batch = dict[str, np.ndarray]


def buckets(max_seq_length: int, multiple: int = 32) -> tuple[int, ...]:
    """Padded lengths a batch may have: multiples of `multiple` below `max_seq_length`, then it."""
    return (*range(multiple, max_seq_length, multiple), max_seq_length)


def bucket_sizes(encoded: Encoded) -> tuple[int, ...]:
    """The padded lengths the batches of `encoded` may have."""
    return buckets(encoded.max_seq_length, encoded.bucket_multiple)


def padded_length(longest: int, bucket_sizes: Sequence[int]) -> int:
    """The smallest bucket size >= `longest`."""
    position = int(np.searchsorted(bucket_sizes, longest))
    if position == len(bucket_sizes):
        raise ValueError(
            f"row of {longest} tokens is longer than the largest bucket {bucket_sizes[-1]}"
        )
    return int(bucket_sizes[position])


def collate(encoded: Encoded, indices: np.ndarray, batch_size: int) -> Batch:
    """Pads the examples at `indices` (at most `batch_size`) into one fixed-size batch."""
    indices = np.asarray(indices, np.int64)
    count = len(indices)
    if not 0 < count <= batch_size:
        raise ValueError(f"need 1..{batch_size} indices, got {count}")
    lengths = encoded.lengths[indices]
    width = padded_length(int(lengths.max()), bucket_sizes(encoded))
    input_ids = np.full((batch_size, width), encoded.pad_token_id, np.int32)
    token_type_ids = np.zeros((batch_size, width), np.int32)
    attention_mask = np.zeros((batch_size, width), np.int32)
    for row, (example, length) in enumerate(zip(indices, lengths, strict=True)):
        input_ids[row, :length] = encoded.input_ids[example]
        token_type_ids[row, :length] = encoded.token_type_ids[example]
        attention_mask[row, :length] = 1
    labels = np.zeros(batch_size, encoded.labels.dtype)
    labels[:count] = encoded.labels[indices]
    weights = np.zeros(batch_size, np.float32)
    weights[:count] = 1.0
    index = np.full(batch_size, -1, np.int32)
    index[:count] = indices
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "labels": labels,
        "weights": weights,
        "index": index,
    }


def _split(indices: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]


def num_train_batches(encoded: Encoded, batch_size: int) -> int:
    """Batches per epoch: ceil(N / batch_size) (the last one padded)."""
    return -(-len(encoded) // batch_size)


def num_eval_batches(encoded: Encoded, batch_size: int) -> int:
    """Same count as `num_train_batches`: every example once, last batch padded."""
    return num_train_batches(encoded, batch_size)


def train_batch_indices(
    encoded: Encoded, batch_size: int, seed: int, epoch: int, chunk_batches: int = 50
) -> list[np.ndarray]:
    """The example indices of each training batch of one epoch, in order.

    Shuffle with an rng seeded by (seed, epoch); sort each chunk of
    `chunk_batches * batch_size` shuffled examples by length, so a batch holds
    rows of similar length; cut chunks into batches; shuffle the batch order.
    """
    rng = np.random.default_rng([seed, epoch])
    permutation = rng.permutation(len(encoded))
    chunk = chunk_batches * batch_size
    batches = []
    for start in range(0, len(permutation), chunk):
        members = permutation[start : start + chunk]
        members = members[np.argsort(encoded.lengths[members], kind="stable")]
        batches.extend(_split(members, batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def train_batches(
    encoded: Encoded,
    batch_size: int,
    seed: int,
    epoch: int,
    start_batch: int = 0,
    chunk_batches: int = 50,
) -> Iterator[Batch]:
    """Length-bucketed, shuffled training batches of one epoch (see `train_batch_indices`).

    The same (seed, epoch) gives the same batches. `start_batch` resumes
    mid-epoch: the skipped batches are never padded or copied.
    """
    batches = train_batch_indices(encoded, batch_size, seed, epoch, chunk_batches)
    for indices in batches[start_batch:]:
        yield collate(encoded, indices, batch_size)


def eval_batches(encoded: Encoded, batch_size: int) -> Iterator[Batch]:
    """Every example exactly once, sorted by length; padding rows have weight 0.

    Scatter predictions back with `batch['index']` (rows with index -1 are padding).
    """
    for indices in eval_batch_indices(encoded, batch_size):
        yield collate(encoded, indices, batch_size)


def eval_batch_indices(encoded: Encoded, batch_size: int) -> list[np.ndarray]:
    """The example indices of each batch `eval_batches` yields: sorted by length."""
    return _split(np.argsort(encoded.lengths, kind="stable"), batch_size)
