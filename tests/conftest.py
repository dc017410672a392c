"""Test setup: 8 fake CPU devices (data parallelism), shared data and models."""

import os
import shutil
import signal
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# The persistent compilation cache (bertjax/compilation.py) of this test session only:
# tests that compile the same program share it, the user's cache stays untouched.
_XLA_CACHE = tempfile.mkdtemp(prefix="bertjax-test-xla-")
os.environ.setdefault("BERTJAX_COMPILATION_CACHE", _XLA_CACHE)
# Tests use local checkpoints only; never wait on an unreachable hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# pytest-xdist workers (scripts/test.sh runs two) start with SIGINT ignored; the
# interruption tests need Python's own handler, as a plain process has it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest  # noqa: E402

from bertjax import paths  # noqa: E402

TEACHER = paths.models_root() / "minilm-l6-h384"


@pytest.fixture(scope="session")
def teacher_dir():
    if not TEACHER.is_dir():
        pytest.skip(f"{TEACHER} not present")
    return TEACHER


@pytest.fixture(scope="session")
def batch_split():
    """A sharding that splits an array's leading axis over every device (`data` mesh)."""
    import jax

    if jax.device_count() < 2:
        pytest.skip("needs several devices (XLA_FLAGS=--xla_force_host_platform_device_count)")
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


@pytest.fixture(scope="session")
def shrink(teacher_dir):
    """Makes a `smoke` config tiny: real tokenizer, 32 train / 16 eval examples, length 32."""

    def apply(config):
        config.model.tokenizer = str(teacher_dir)
        config.data.max_seq_length = 32
        config.data.train_limit = 32
        config.data.eval_limit = 16
        config.train.batch_size = 8
        config.train.eval_batch_size = 8
        return config

    return apply


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_XLA_CACHE, ignore_errors=True)
