"""Hash-based dropout: rate, independence, expectation, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax.models.dropout import Dropout, keep_mask


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_rate_and_no_structure(rate):
    mask = np.asarray(keep_mask(jax.random.key(0), (1000, 1000), rate))
    assert abs(mask.mean() - (1 - rate)) < 3e-3
    # Row and column keep rates vary like independent Bernoulli draws.
    binomial_std = np.sqrt(rate * (1 - rate) / 1000)
    assert mask.mean(0).std() < 1.3 * binomial_std
    assert mask.mean(1).std() < 1.3 * binomial_std


def test_different_keys_give_independent_masks_and_same_key_the_same():
    a = np.asarray(keep_mask(jax.random.key(0), (500, 500), 0.1)).ravel()
    b = np.asarray(keep_mask(jax.random.key(1), (500, 500), 0.1)).ravel()
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01
    same = np.asarray(keep_mask(jax.random.key(0), (500, 500), 0.1)).ravel()
    np.testing.assert_array_equal(a, same)
    # Neighbouring elements are not correlated either.
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.01


def test_dropout_module_scales_and_respects_deterministic():
    x = jnp.ones((200, 300))
    layer = Dropout(0.2)
    np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)
    y = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(3)}))
    assert set(np.unique(y)) == {0.0, 1.25}
    assert abs(y.mean() - 1.0) < 0.02
