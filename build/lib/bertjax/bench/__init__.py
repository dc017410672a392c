"""Latency and size measurement of (compressed) models."""

from bertjax.bench.latency import (
    Forward,
    best_ms,
    build_forward,
    checkpoint_dir,
    checkpoint_head,
    interleave,
    jitted_forward,
    load_model,
    make_forward,
    model_size,
    random_batch,
    summarize,
    time_fn,
)

__all__ = [
    "Forward",
    "best_ms",
    "build_forward",
    "checkpoint_dir",
    "checkpoint_head",
    "interleave",
    "jitted_forward",
    "load_model",
    "make_forward",
    "model_size",
    "random_batch",
    "summarize",
    "time_fn",
]
