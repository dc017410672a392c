"""The attention kernel: softmax(q.k/sqrt(D) + bias).v from the fused projection, at inference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import kernels, models
from bertjax.models import fused_attention
from bertjax.models.interventions import BFLOAT16, Interventions

pytestmark = pytest.mark.skipif(not kernels.attention_available(), reason="no AVX-512 here")
MIN = np.finfo(np.float32).min


# Key tails (T not a multiple of 16 or 128), D = 16 .. 128, one token, padded keys.
@pytest.mark.parametrize(("b", "t", "n", "d"), [(2, 7, 3, 16), (3, 128, 6, 32), (2, 200, 2, 128),
                                                (1, 130, 1, 48), (2, 1, 2, 32)])  # fmt: skip
def test_kernel_is_the_softmax_attention(b, t, n, d):
    rng = np.random.default_rng(t + d)
    qkv = (rng.standard_normal((b, t, 3 * n * d)) * 2).astype(np.float32)
    bias = np.zeros((b, t), np.float32)
    bias[0, t // 2 + 1 :] = MIN  # padded keys get nothing
    projection_bias = rng.standard_normal(3 * n * d).astype(np.float32)
    run = jax.jit(kernels.attention, static_argnums=2)
    got = np.asarray(run(qkv, bias, n, projection_bias))
    want = kernels.reference_attention(qkv, bias, n, projection_bias)
    np.testing.assert_allclose(got, want, atol=2e-5)
    xla = fused_attention.xla_attention(jnp.asarray(qkv), jnp.asarray(bias), n, projection_bias)
    np.testing.assert_allclose(got, np.asarray(xla), atol=2e-5)
    # The bias is the one added beforehand.
    np.testing.assert_allclose(np.asarray(run(qkv + projection_bias, bias, n)), got, atol=2e-5)
    if t > 1:  # a padded key's value changes nothing in the first row
        moved = qkv.copy()
        moved[0, -1, 2 * n * d :] += 100.0
        np.testing.assert_array_equal(np.asarray(run(moved, bias, n, projection_bias))[0], got[0])


def test_gradients_flow_through_the_xla_backward():
    rng = np.random.default_rng(0)
    qkv = jnp.asarray(rng.standard_normal((2, 9, 3 * 2 * 16)), jnp.float32)
    projection_bias = jnp.asarray(rng.standard_normal(3 * 2 * 16), jnp.float32)
    bias = jnp.zeros((2, 9)).at[1, 5:].set(MIN)
    loss = lambda f: lambda x, c: jnp.sum(jnp.sin(f(x, bias, 2, c)))  # noqa: E731
    got = jax.grad(loss(fused_attention.attention), argnums=(0, 1))(qkv, projection_bias)
    want = jax.grad(loss(fused_attention.xla_attention), argnums=(0, 1))(qkv, projection_bias)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-5)


def test_the_model_uses_it_at_inference_only_and_gives_the_same_outputs(monkeypatch):
    config = models.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=48)  # fmt: skip
    model, params = models.build(config, "classification", num_labels=2)
    ids = jnp.asarray(np.random.default_rng(1).integers(1, 60, (2, 11)), jnp.int32)
    mask = jnp.ones_like(ids).at[1, 6:].set(0)

    def run(deterministic=True, **kw):
        rngs = {} if deterministic else {"dropout": jax.random.key(0)}
        fn = lambda p: model.apply({"params": p}, ids, mask, deterministic=deterministic,  # noqa: E731
                                   rngs=rngs, **kw)[0]["logits"]  # fmt: skip
        return fn(params), jax.jit(fn).lower(params).as_text().count(kernels.ATTENTION_TARGET)

    fast, calls = run()
    assert calls == 2  # one per layer
    head_mask = jnp.ones((2, 2))
    for kw, expected in (({"deterministic": False}, 0),
                         ({"interventions": Interventions(head_mask=head_mask)}, 0),
                         ({"interventions": Interventions(matmul=BFLOAT16)}, 0)):  # fmt: skip
        assert run(**kw)[1] == expected
    monkeypatch.setattr(fused_attention, "supports", lambda head_dim: False)
    plain, calls = run()
    assert calls == 0
    np.testing.assert_allclose(np.asarray(fast), np.asarray(plain), atol=1e-5)
    # Collected probabilities still come (from XLA's path beside the kernel's context).
    monkeypatch.undo()
    _, inter = model.apply({"params": params}, ids, mask, collect=("attn_probs",))
    assert inter["attn_probs/0"].shape == (2, 2, 11, 11)


def test_under_a_sharded_jit_each_device_runs_its_own_examples(batch_split):
    rows = batch_split
    rng = np.random.default_rng(1)
    qkv = rng.standard_normal((jax.device_count(), 9, 3 * 2 * 16)).astype(np.float32)
    bias = np.where(np.arange(9) < 6, 0.0, -1e4).astype(np.float32)[None].repeat(len(qkv), 0)
    fn = jax.jit(kernels.attention, static_argnums=2)
    placed = jax.device_put(qkv, rows), jax.device_put(bias, rows)
    assert "all-gather" not in fn.lower(*placed, 2).compile().as_text()
    out = fn(*placed, 2)
    assert out.sharding.spec[0] == "data"
    reference = kernels.reference_attention(qkv, bias, 2)
    np.testing.assert_allclose(np.asarray(out), reference, atol=1e-5)
