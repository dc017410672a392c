"""Compiling the steps of the padded lengths still to come, in a background thread.

A run meets each padded length (32, 64, 96, 128 at seq 128) the first time one of
its batches has it, and XLA then compiles a new executable while the device waits:
about 10 CPU-s per MiniLM-L6 train step. A second thread can compile the next lengths
while the first ones train; on a host with spare cores that hides the compilation. On
the 2-core CPU here it gained nothing in train time (the compiling thread takes a core
from the step; benchmarks/results/runtime.md, session 11), ~5 s of wall time.
`jit(f).lower(...).compile()` fills the same executable cache that a later `f(...)` call
reads, so the training loop itself is unchanged: its call simply finds the executable
ready (or, while the thread is still on it, compiles it itself, which costs what it cost
before).
"""

from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import jax

from bertjax.data import pipeline
from bertjax.data.tokenizer import Encoded


def abstract(tree):
    """`tree` with every array replaced by its shape, dtype and (when committed to
    devices) sharding: what lowering needs, safe to read after the arrays themselves were
    donated. An uncommitted array keeps no sharding, or the call would not match it."""

    def spec(x):
        if isinstance(x, jax.Array):
            sharding = x.sharding if x.committed else None
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
        return x

    return jax.tree.map(spec, tree)


def first_of_each(items: Iterable, key: Callable) -> list:
    """The first item of each distinct `key(item)`, in order of first appearance."""
    seen, out = set(), []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


def train_batches_by_width(
    encoded: Encoded, batch_size: int, seed: int, epoch: int, start_batch: int = 0
) -> list[pipeline.Batch]:
    """The first training batch of each padded length of `epoch` from `start_batch`,
    in the order the loop meets them (collated exactly as `pipeline.train_batches`)."""
    plan = pipeline.train_batch_indices(encoded, batch_size, seed, epoch)[start_batch:]
    return _first_of_each_width(encoded, plan, batch_size)


def eval_batches_by_width(encoded: Encoded, batch_size: int) -> list[pipeline.Batch]:
    """The first evaluation batch of each padded length (`pipeline.eval_batches`)."""
    return _first_of_each_width(
        encoded, pipeline.eval_batch_indices(encoded, batch_size), batch_size
    )


def _first_of_each_width(encoded: Encoded, plan: list, batch_size: int) -> list[pipeline.Batch]:
    """The first batch of `plan` (index arrays) at each padded length, collated; widths
    come from the lengths, so only the batches returned are built."""
    sizes = pipeline.bucket_sizes(encoded)
    firsts = first_of_each(
        plan, lambda indices: pipeline.padded_length(int(encoded.lengths[indices].max()), sizes)
    )
    return [pipeline.collate(encoded, indices, batch_size) for indices in firsts]


class Compiler:
    """Compiles `(jitted, args)` jobs one after another on a background thread.

    Failures are dropped: the same call in the loop will raise them where they belong.
    `close()` cancels what has not started (a compilation in progress finishes).
    """

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertjax-compile")
        self.futures: list[Future] = []

    def submit(self, jitted, *args) -> Future:
        future = self._pool.submit(lambda: jitted.lower(*args).compile())
        self.futures.append(future)
        return future

    def wait(self) -> None:
        for future in self.futures:
            future.exception()  # waits; failures stay the loop's to raise

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
