"""Fake quantization: error bound, STE gradient, per-channel vs per-tensor, sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import models
from methods.quant import QuantSpec, WeightQuantization, fake_quant, straight_through


def _reference_fake_quant(x, bits, symmetric):
    """Plain numpy per-tensor quantize-dequantize, for comparison."""
    x = np.asarray(x, np.float64)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = np.abs(x).max() / qmax
        return np.clip(np.round(x / scale), -qmax, qmax) * scale
    lo, hi = min(x.min(), 0.0), max(x.max(), 0.0)
    scale = (hi - lo) / (2**bits - 1)
    zero = np.round(-lo / scale)
    return (np.clip(np.round(x / scale) + zero, 0, 2**bits - 1) - zero) * scale


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_matches_reference_and_error_is_within_half_a_step(bits, symmetric):
    x = jnp.asarray(np.random.default_rng(bits).normal(size=(33, 17)), jnp.float32)
    ours = np.asarray(fake_quant(x, QuantSpec(bits, symmetric)))
    reference = _reference_fake_quant(x, bits, symmetric)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
    values = np.unique(ours)
    assert len(values) <= 2**bits
    step = np.diff(values).min()
    assert np.abs(ours - np.asarray(x)).max() <= step / 2 + 1e-6


def test_straight_through_gradient_equals_identity():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)), jnp.float32)
    spec = QuantSpec(4)

    def loss(x):
        return jnp.sum(jnp.sin(straight_through(x, fake_quant(x, spec))))

    grad = jax.grad(loss)(x)
    # Reference: d/dx sin(q(x)) with the STE is cos(q(x)) * 1.
    np.testing.assert_allclose(grad, np.cos(np.asarray(fake_quant(x, spec))), rtol=1e-6)
    np.testing.assert_allclose(straight_through(x, fake_quant(x, spec)), fake_quant(x, spec))


def test_per_channel_beats_per_tensor_on_skewed_channels():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 8)) * np.logspace(-3, 0, 8), jnp.float32)
    errors = {
        pc: float(jnp.mean((fake_quant(x, QuantSpec(8, per_channel=pc)) - x) ** 2))
        for pc in (False, True)
    }
    assert errors[True] < errors[False] / 3


def test_weight_quantization_method_and_report():
    config = models.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
    )
    _, params = models.build(config, "classification")
    method = WeightQuantization(QuantSpec(4, per_channel=True))
    seen = method.forward_params(params, method.init(params, None))
    query = seen["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
    assert all(len(np.unique(query[:, c])) <= 16 for c in range(query.shape[1]))
    bias = seen["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["bias"]
    np.testing.assert_array_equal(
        bias, params["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["bias"]
    )
    report = method.report(params, None)
    fp32 = sum(x.nbytes for x in jax.tree_util.tree_leaves(params))
    assert report["weight_bits"] == 4 and report["quantized_bytes"] < fp32
    with pytest.raises(ValueError):
        QuantSpec(1)


def test_quantized_dot_general_quantizes_activations_not_dense_kernels():
    from methods.quant import quantized_dot_general

    spec = QuantSpec(4, symmetric=False)
    dot = quantized_dot_general(spec)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, 8)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(8, 5)), jnp.float32)
    dense = (((1,), (0,)), ((), ()))
    np.testing.assert_allclose(dot(x, w, dense), fake_quant(x, spec) @ w, rtol=1e-5, atol=1e-5)
    # Attention-style matmul (batch dims): both operands are activations.
    q = jnp.asarray(rng.normal(size=(2, 3, 4, 8)), jnp.float32)
    batched = (((3,), (3,)), ((0, 1), (0, 1)))
    expected = jnp.einsum("bhqd,bhkd->bhqk", fake_quant(q, spec), fake_quant(q, spec))
    np.testing.assert_allclose(dot(q, q, batched), expected, rtol=1e-5, atol=1e-5)
    # Straight-through: the gradient is that of the plain matmul at the quantized point.
    grad = jax.grad(lambda x: jnp.sum(dot(x, w, dense)))(x)
    np.testing.assert_allclose(grad, jnp.ones((6, 5)) @ w.T, rtol=1e-5)


def test_activation_quantization_changes_outputs_a_little():
    from methods.quant import ActivationQuantization

    config = models.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
    )
    model, params = models.build(config, "classification")
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 64, (2, 7)), jnp.int32)
    plain = model.apply({"params": params}, ids)[0]["logits"]
    for bits, tolerance in ((8, 0.05), (4, 1.0)):
        method = ActivationQuantization(QuantSpec(bits, symmetric=False))
        quantized = model.apply({"params": params}, ids, **method.overrides(None))[0]["logits"]
        error = float(jnp.max(jnp.abs(quantized - plain)))
        assert 0 < error < tolerance * float(jnp.max(jnp.abs(plain)))
