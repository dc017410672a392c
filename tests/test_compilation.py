"""The persistent compilation cache: where it goes, and that a cached executable
gives the same train steps as a freshly compiled one."""

import jax
import ml_collections
import numpy as np
import pytest
from jax._src import monitoring
from jax.experimental.compilation_cache import compilation_cache

from bertjax import compilation, models
from bertjax.train import steps
from bertjax.train.optimizer import make_optimizer
from bertjax.train.state import TrainState

CONFIG = models.BertConfig(
    vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
)
TRAIN = dict(learning_rate=1e-3, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0)


def _batch(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 64, (8, 12)).astype(np.int32)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
        "labels": rng.integers(0, 2, 8).astype(np.int32),
        "weights": np.ones(8, np.float32),
    }


@pytest.fixture
def clean_cache(monkeypatch):
    """No cache configured; the process's own setting is restored afterwards."""
    before = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_compilation_cache_max_size,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_compilation_cache_max_size", before[1])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[2])
    compilation_cache.reset_cache()


def test_directory_choice(clean_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("BERTJAX_COMPILATION_CACHE", "off")
    assert compilation.enable() is None
    assert jax.config.jax_compilation_cache_dir is None
    monkeypatch.setenv("BERTJAX_COMPILATION_CACHE", str(tmp_path / "mine"))
    assert compilation.enable() == tmp_path / "mine"
    assert (tmp_path / "mine").is_dir()
    assert jax.config.jax_compilation_cache_max_size == compilation.MAX_BYTES
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax"))
    assert compilation.enable() == tmp_path / "jax"  # JAX's own setting wins


def test_cached_train_step_equals_a_fresh_compile(clean_cache, monkeypatch, tmp_path):
    hits = []
    monitoring.register_event_listener(
        lambda event, **_: hits.append(event) if event.endswith("cache_hits") else None
    )
    monkeypatch.setenv("BERTJAX_COMPILATION_CACHE", str(tmp_path))
    compilation.enable()
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

    def three_steps():
        model, params = models.build(CONFIG, "classification")
        state = TrainState.create(params, make_optimizer(ml_collections.ConfigDict(TRAIN), 10), 0)
        # A new jitted function each time: the in-memory cache cannot serve it.
        step = jax.jit(steps.train_step_fn(model, regression=False), donate_argnums=0)
        for seed in range(3):
            state, values = step(state, _batch(seed))
        return jax.device_get((state.params, values["loss"]))

    fresh = three_steps()
    assert any(tmp_path.iterdir()), "nothing was written to the cache"
    assert not hits
    cached = three_steps()
    assert hits, "the second run did not load from the cache"
    for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(cached), strict=True):
        np.testing.assert_array_equal(a, b)
