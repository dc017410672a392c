"""Fake quantization: error bound, STE gradient, per-channel vs per-tensor, sizes, and the
weight and (dynamic) activation quantization methods on the model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import models
from bertjax.models.bert import Dense
from bertjax.models.interventions import Interventions
from bertjax.train import steps
from methods.base import Method, compose
from methods.distill.theseus import ModuleReplacing
from methods.quant import (
    ActivationQuantization,
    DynamicRanges,
    QuantSpec,
    WeightQuantization,
    fake_quant,
    straight_through,
)

CONFIG = models.BertConfig(
    vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
)


@pytest.fixture(scope="module")
def classifier():
    return models.build(CONFIG, "classification")


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


def _kernels(params, stack="layer"):
    """{name: kernel} of the Dense kernels of every layer in `stack`, and the pooler's."""
    found = {"pooler": params["bert"]["pooler"]["dense"]["kernel"]}
    for i, layer in params["bert"]["encoder"][stack].items():
        for path, leaf in jax.tree_util.tree_leaves_with_path(layer):
            if path[-1].key == "kernel":
                found[f"{stack}/{i}/" + "/".join(k.key for k in path)] = leaf
    return found


def test_weight_quantization_method_and_report(classifier):
    _, params = classifier
    method = WeightQuantization(QuantSpec(4, per_channel=True))
    params, state = method.init(params, {})
    seen, interventions = method.present(params, state, 0, True)
    assert interventions.set_fields() == ()  # weights only: no model intervention
    kernels, quantized = _kernels(params), _kernels(seen)
    assert len(kernels) == 2 * 6 + 1
    for name, kernel in quantized.items():  # 4 bits per output channel, from its own range
        for c in range(kernel.shape[1]):
            np.testing.assert_allclose(
                kernel[:, c], _reference_fake_quant(kernels[name][:, c], 4, True), atol=1e-6
            )
    # Everything else as it was: biases, LayerNorms, embeddings, the classifier.
    untouched = dict(jax.tree_util.tree_leaves_with_path(seen))
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if path[-1].key != "kernel" or path[0].key == "classifier":
            np.testing.assert_array_equal(untouched[path], leaf)
    # Bytes: each selected kernel at 4 bits plus one fp32 scale per output channel.
    report = method.report(params, state)
    fp32 = sum(x.nbytes for x in jax.tree_util.tree_leaves(params))
    size = sum(k.size for k in kernels.values())
    channels = sum(k.shape[1] for k in kernels.values())
    assert report == {
        "weight_bits": 4,
        "quantized_bytes": fp32 - 4 * size + size // 2 + 4 * channels,
    }
    with pytest.raises(ValueError):
        QuantSpec(1)


def test_weight_quantization_reaches_theseus_successors_and_the_final_model():
    config = models.BertConfig(**{**CONFIG.__dict__, "num_hidden_layers": 4})
    model, params = models.build(config, "classification")
    spec = QuantSpec(4, per_channel=True)
    # The config order: quant before theseus.
    method = compose([WeightQuantization(spec), ModuleReplacing(num_layers=4, successors=2)])
    params, state = method.init(params, {"state": jax.random.key(0)})
    seen, _ = method.present(params, state, 0, True)
    for name, kernel in _kernels(seen, "successor").items():
        assert max(len(np.unique(kernel[:, c])) for c in range(kernel.shape[1])) <= 16, name
    final, final_config = method.finalize(params, state, model.config)
    assert final_config.num_hidden_layers == 2
    successors = _kernels(params, "successor")  # layer m of the final model: successor m
    for name, kernel in _kernels(final).items():
        source = successors[name.replace("layer/", "successor/", 1)]
        np.testing.assert_array_equal(kernel, fake_quant(source, spec), err_msg=name)


def test_dynamic_ranges_fake_quantize_activations_not_dense_kernels():
    spec = QuantSpec(4, symmetric=False)
    matmul = DynamicRanges(spec)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, 8)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(8, 5)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(5,)), jnp.float32)
    quantized, statistic = matmul.operand(x, "dense/input")
    np.testing.assert_array_equal(quantized, fake_quant(x, spec))
    assert statistic is None  # dynamic ranges record nothing
    # A Dense layer: its input on the grid, its kernel as it is.
    dense = Dense(5)
    variables = {"params": {"kernel": w, "bias": b}}
    out = dense.apply(variables, x, Interventions(matmul=matmul))
    np.testing.assert_allclose(out, fake_quant(x, spec) @ w + b, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out, x @ w + b, atol=1e-2)
    # Straight through: the gradient is that of the plain matmul at the quantized point.
    grad = jax.grad(lambda x: jnp.sum(dense.apply(variables, x, Interventions(matmul=matmul))))(x)
    np.testing.assert_allclose(grad, jnp.ones((6, 5)) @ w.T, rtol=1e-5)


def test_activation_quantization_error_shrinks_with_bits(classifier):
    model, params = classifier
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 64, (2, 7)), jnp.int32)
    batch = {"input_ids": ids, "attention_mask": jnp.ones_like(ids)}
    batch["token_type_ids"] = jnp.zeros_like(ids)

    def logits(method):
        outputs, _, _ = steps.forward(model, method, params, {}, 0, batch, train=False)
        return np.asarray(outputs["logits"])

    plain = logits(Method())
    errors = {
        bits: float(
            np.abs(logits(ActivationQuantization(QuantSpec(bits, symmetric=False))) - plain).max()
        )
        for bits in (4, 8)
    }
    scale = float(np.abs(plain).max())
    # 8 bits: a small but real change; 4 bits (a 17x coarser grid): a much larger one.
    assert 0 < errors[8] < 0.05 * scale
    assert errors[4] > 4 * errors[8]
