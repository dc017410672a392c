"""Train step: weighted loss, one trace, same result on 1 and 8 devices."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bertjax import models
from bertjax.train import mesh as mesh_lib
from bertjax.train import steps
from bertjax.train.optimizer import NO_DECAY, learning_rate_schedule, make_optimizer
from bertjax.train.state import TrainState
from methods import selectors

CONFIG = models.BertConfig(
    vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
)
TRAIN = ml_collections.ConfigDict(
    dict(learning_rate=1e-3, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0)
)


def _batch(seed, batch_size=8, length=12):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 64, (batch_size, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[::2, length // 2 :] = 0
    weights = np.ones(batch_size, np.float32)
    weights[-2:] = 0.0  # padding rows, as the pipeline fills a last batch
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": np.zeros_like(ids),
        "labels": rng.integers(0, 2, batch_size).astype(np.int32),
        "weights": weights,
    }


def _state(seed=0):
    model, params = models.build(CONFIG, "classification")
    return model, TrainState.create(params, make_optimizer(TRAIN, 100), seed)


def test_task_loss_ignores_padding_rows():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)), jnp.float32)
    labels = jnp.asarray([0, 1, 2, 1, 0, 0])
    weights = jnp.asarray([1, 1, 1, 1, 0, 0], jnp.float32)
    padded = steps.task_loss(logits, labels, weights, regression=False)
    real = steps.task_loss(logits[:4], labels[:4], jnp.ones(4), regression=False)
    np.testing.assert_allclose(padded, real, rtol=1e-6)
    reference = -np.mean(jax.nn.log_softmax(logits[:4])[np.arange(4), labels[:4]])
    np.testing.assert_allclose(real, reference, rtol=1e-6)
    scores = jnp.asarray([[1.0], [2.0], [9.0]])
    mse = steps.task_loss(
        scores, jnp.asarray([0.0, 2.0, 0.0]), jnp.asarray([1.0, 1.0, 0.0]), regression=True
    )
    np.testing.assert_allclose(mse, 0.5)


def test_train_step_traces_once_and_learns():
    model, state = _state()
    step = jax.jit(chex.assert_max_traces(steps.train_step_fn(model, regression=False), n=1))
    batch = _batch(0)
    losses = []
    for _ in range(8):
        state, values = step(state, batch)
        losses.append(float(values["loss"]))
    assert int(state.step) == 8
    assert losses[-1] < losses[0]


def test_same_result_on_one_and_eight_devices():
    assert jax.device_count() == 8, "conftest sets 8 fake CPU devices"
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = mesh_lib.make_mesh(devices)
        model, state = _state()
        state = mesh_lib.replicate(state, mesh)
        step = steps.make_train_step(model, regression=False)
        for seed in range(3):
            state, _ = step(state, mesh_lib.shard_batch(_batch(seed), mesh))
        results.append(jax.device_get(state.params))
    chex.assert_trees_all_close(results[0], results[1], atol=2e-6)


def test_batch_must_divide_over_devices():
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        mesh_lib.check_batch_size(12, mesh_lib.make_mesh())


def test_eval_step_gives_float32_logits():
    model, params = models.build(CONFIG, "regression")
    batch = _batch(1)
    scores = steps.make_eval_step(model)(params, {}, batch)
    assert scores.shape == (8, 1) and scores.dtype == jnp.float32


def test_weight_decay_skips_biases_and_layer_norm():
    _, params = models.build(CONFIG, "classification")
    mask = selectors.select(params, ".*", exclude=NO_DECAY)
    decayed = {
        p
        for p, m in zip(selectors.param_paths(params), jax.tree_util.tree_leaves(mask), strict=True)
        if m
    }
    assert "bert/encoder/layer/0/attention/self/query/kernel" in decayed
    assert "bert/embeddings/word_embeddings/embedding" in decayed
    assert not any(p.endswith("/bias") or "LayerNorm" in p for p in decayed)


def test_learning_rate_warms_up_then_decays_to_zero():
    schedule = learning_rate_schedule(1e-4, total_steps=100, warmup_steps=10)
    np.testing.assert_allclose(
        [schedule(0), schedule(5), schedule(10), schedule(55), schedule(100)],
        [0, 5e-5, 1e-4, 5e-5, 0],
        atol=1e-10,
    )


def test_each_device_gets_its_own_rows_whatever_the_device_order():
    # A mesh whose devices are not in id order (as processes' devices may interleave):
    # device k of the mesh still holds rows 2k, 2k+1 of the global batch.
    devices = np.asarray(jax.devices())[[3, 0, 7, 1, 6, 2, 5, 4]]
    mesh = mesh_lib.make_mesh(list(devices))
    batch = {"x": np.arange(16), "y": np.arange(16) * 10}
    sharded = mesh_lib.shard_batch(batch, mesh)
    np.testing.assert_array_equal(np.asarray(sharded["y"]), batch["y"])
    rows = {shard.device: np.asarray(shard.data) for shard in sharded["x"].addressable_shards}
    for k, device in enumerate(devices):
        np.testing.assert_array_equal(rows[device], [2 * k, 2 * k + 1])
