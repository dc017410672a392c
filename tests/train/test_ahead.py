"""Ahead-of-time compilation: the right batches, and the loop's call finds them compiled."""

import jax
import ml_collections
import numpy as np
from jax._src import dispatch, monitoring

from bertjax import models
from bertjax.data import pipeline
from bertjax.data import tokenizer as tokenization
from bertjax.train import ahead, steps
from bertjax.train.optimizer import make_optimizer
from bertjax.train.state import TrainState


def _encoded(count=200, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 129, size=count)
    ids = [rng.integers(1, 64, n).astype(np.int32) for n in lengths]
    types = [np.zeros(n, np.int32) for n in lengths]
    return tokenization.Encoded(ids, types, rng.integers(0, 2, count).astype(np.int32), 128)


def test_batches_by_width_are_the_loops_first_of_each_length():
    encoded = _encoded()
    for start in (0, 3):
        loop_batches = list(pipeline.train_batches(encoded, 16, 7, 1, start_batch=start))
        expected = {}
        for batch in loop_batches:
            expected.setdefault(batch["input_ids"].shape[1], batch)
        got = ahead.train_batches_by_width(encoded, 16, 7, 1, start_batch=start)
        assert [b["input_ids"].shape[1] for b in got] == list(expected)  # order of meeting
        for batch in got:
            want = expected[batch["input_ids"].shape[1]]
            for key in want:
                np.testing.assert_array_equal(batch[key], want[key])
    widths = [b["input_ids"].shape[1] for b in ahead.eval_batches_by_width(encoded, 16)]
    assert widths == sorted(set(widths)) == list(pipeline.buckets(128))


def test_the_call_after_compiling_ahead_does_not_compile():
    config = models.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32,
    )  # fmt: skip
    model, params = models.build(config, "classification")
    train = ml_collections.ConfigDict(
        dict(learning_rate=1e-3, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0)
    )
    state = TrainState.create(params, make_optimizer(train, 10), 0)
    step = steps.make_train_step(model, regression=False)
    encoded = _encoded(40)
    first, *rest = ahead.train_batches_by_width(encoded, 8, 0, 0)
    assert rest, "the data must have several padded lengths"
    rest = rest[:1]  # one more length: each compile of the 8-device step costs seconds
    state, _ = step(state, {k: v for k, v in first.items() if k != "index"})
    compiles = []
    listener = lambda event, seconds, **_: compiles.append(event)  # noqa: E731
    monitoring.register_event_duration_secs_listener(listener)
    try:
        with ahead.Compiler() as compiler:
            for batch in rest:
                batch.pop("index")
                compiler.submit(step, ahead.abstract(state), ahead.abstract(batch))
            compiler.wait()
        ahead_count = compiles.count(dispatch.BACKEND_COMPILE_EVENT)
        assert ahead_count >= len(rest)
        for batch in rest:
            state, values = step(state, batch)
        assert compiles.count(dispatch.BACKEND_COMPILE_EVENT) == ahead_count
        assert np.isfinite(float(jax.device_get(values["loss"])))
    finally:
        monitoring.unregister_event_duration_listener(listener)
