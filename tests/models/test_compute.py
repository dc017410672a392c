"""Arithmetics: bfloat16 matmuls (inference and mixed-precision training) and int8 weights
with bf16 activations (W8A16)."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bertjax import models
from bertjax.models import bfloat16, int8
from bertjax.models.bert import Dense
from bertjax.models.interventions import BFLOAT16, Interventions, compute_interventions
from bertjax.train import method_config, steps
from methods.base import Context, Method
from methods.precision import Precision
from methods.quant import storage

CONFIG = models.BertConfig(
    vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=128, max_position_embeddings=32,
)  # fmt: skip


F32_DOT = re.compile(r"stablehlo.dot_general .*: \(tensor<[0-9x]+xf32>, tensor<[0-9x]+xf32>\)")


def _bf16(x) -> np.ndarray:
    """x rounded to bfloat16, as float64."""
    return np.asarray(
        jnp.asarray(x, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32), np.float64
    )


def test_bf16_dense_is_the_product_of_bf16_operands_accumulated_in_f32():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 3, 48)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((48, 16)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(16), jnp.float32)
    params = {"params": {"kernel": kernel, "bias": bias}}
    out = Dense(16).apply(params, x, Interventions(matmul=BFLOAT16))
    assert out.dtype == jnp.float32
    expected = _bf16(x) @ _bf16(kernel) + np.asarray(bias, np.float64)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    fp32 = np.asarray(Dense(16).apply(params, x))
    assert np.abs(fp32 - expected).max() > 1e-3  # the operands really were rounded


def test_weight_only_int8_is_bf16_activations_times_the_int8_grid():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((4, 40)), jnp.float32)
    leaf = storage.quantize_kernel(jnp.asarray(rng.standard_normal((40, 8)), jnp.float32))
    out = int8.weight_only_dense(x, leaf)
    expected = (_bf16(x) @ np.asarray(leaf["qvalue"], np.float64)) * np.asarray(leaf["scale"])
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    # A calibrated input scale plays no part: activations are not quantized.
    static = storage.quantize_kernel(jnp.asarray(np.zeros((40, 8)) + 1.0, jnp.float32), 0.01)
    np.testing.assert_array_equal(
        np.asarray(int8.weight_only_dense(x, static)),
        np.asarray(int8.weight_only_dense(x, {k: static[k] for k in ("qvalue", "scale")})),
    )


@pytest.fixture(scope="module")
def classifier():
    return models.build(CONFIG, "classification", num_labels=2)


def test_bf16_model_is_close_to_fp32_and_int8_weights_stay_int8(classifier):
    model, params = classifier
    ids = np.random.default_rng(2).integers(1, CONFIG.vocab_size, (3, 17)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 9:] = 0

    def logits(p, compute):
        out, _ = model.apply({"params": p}, ids, mask, interventions=compute_interventions(compute))
        return np.asarray(out["logits"])

    fp32, bf16 = logits(params, "fp32"), logits(params, "bf16")
    scale = np.abs(fp32).max()
    assert 0 < np.abs(bf16 - fp32).max() < 3e-2 * scale
    q = storage.quantize_params(params)
    w8a16, w8a8 = logits(q, "bf16"), logits(q, "fp32")
    assert np.abs(w8a16 - fp32).max() < 5e-2 * scale
    assert not np.array_equal(w8a16, w8a8)  # a different arithmetic ran
    lowered = (
        jax.jit(
            lambda p: model.apply(
                {"params": p}, ids, mask, interventions=compute_interventions("bf16")
            )
        )
        .lower(q)
        .as_text()
    )
    assert not re.search(r"dot_general .*: \(tensor<[0-9x]+xi8>, tensor<[0-9x]+xi8>\)", lowered)
    assert re.search(r"dot_general .*: \(tensor<[0-9x]+xbf16>, tensor<[0-9x]+xbf16>\)", lowered)
    with pytest.raises(ValueError, match="unknown compute 'fp16'; known: fp32, bf16"):
        compute_interventions("fp16")


def test_dense_product_backward_runs_bf16_operands_into_f32():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 5, 24)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((24, 12)), jnp.float32)
    g = jnp.asarray(rng.standard_normal((2, 5, 12)), jnp.float32)
    y, vjp = jax.vjp(bfloat16.dense_product, x, w)
    dx, dw = vjp(g)
    assert y.dtype == dx.dtype == dw.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(dx), _bf16(g) @ _bf16(w).T, rtol=1e-5, atol=1e-5)
    expected_dw = _bf16(x).reshape(-1, 24).T @ _bf16(g).reshape(-1, 12)
    np.testing.assert_allclose(np.asarray(dw), expected_dw, rtol=1e-5, atol=1e-5)
    lowered = jax.jit(lambda x, w, g: jax.vjp(bfloat16.dense_product, x, w)[1](g)).lower(x, w, g)
    assert not F32_DOT.search(lowered.as_text())  # every product of the backward is bf16


def test_bf16_training_differentiates_every_dense_in_bf16(classifier):
    model, params = classifier
    config = ml_collections.ConfigDict({"precision": {"compute": "bf16"}})
    method = method_config.build_method(config, Context())
    assert method.name == "bf16"
    off = ml_collections.ConfigDict({"precision": {"compute": "fp32"}})
    assert method_config.method_name(method_config.build_method(off, Context())) == "finetune"
    ids = np.random.default_rng(4).integers(1, CONFIG.vocab_size, (2, 9)).astype(np.int32)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}

    def loss(p, m):
        # With dropout, as in training (a deterministic forward takes inference's paths).
        rng = jax.random.key(0)
        outputs, _, _ = steps.forward(model, m, p, {}, 0, batch, train=True, rng=rng)
        return outputs["logits"].sum()

    grads = jax.jit(jax.grad(loss), static_argnums=1)(params, method)
    reference = jax.jit(jax.grad(loss), static_argnums=1)(params, Method())
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(reference), strict=True):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0.1, atol=2e-2)
    text = jax.jit(jax.grad(loss), static_argnums=1).lower(params, method).as_text()
    # Only the attention products' derivatives (JAX's, 2 per product) stay float32.
    assert len(F32_DOT.findall(text)) == 2 * 2 * CONFIG.num_hidden_layers
    with pytest.raises(ValueError, match="precision.compute must be one of fp32, bf16"):
        Precision(compute="fp16")
