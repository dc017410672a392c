"""Static activation ranges: site numbering, EMA (Q8BERT) and calibration statistics."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bertjax import models
from bertjax.train import steps
from bertjax.train.optimizer import make_optimizer
from bertjax.train.state import TrainState
from methods.base import compose
from methods.pruning.layer_drop import LayerDrop
from methods.quant import ActivationQuantization, QuantSpec, WeightQuantization, fake_quant
from methods.quant import calibration as calibration_lib
from methods.quant.activations import max_sites

CONFIG = models.BertConfig(
    vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
)
# Per layer: q, k, v, attention output, FFN in, FFN out, and both operands of
# the two attention products; plus the pooler and the classifier.
SITES = 2 * (6 + 4) + 2
SPEC = QuantSpec(8, symmetric=False)


@pytest.fixture(scope="module")
def classifier():
    return models.build(CONFIG, "classification")


def _inputs(seed, batch=4, length=9):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 64, (batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, length // 2 :] = 0
    return jnp.asarray(ids), jnp.asarray(mask)


def _collecting(overrides):
    """`overrides` whose dot_general also appends each activation operand it quantizes."""
    inner, operands = overrides["dot_general"], []

    def dot_general(lhs, rhs, dimension_numbers, *args, **kwargs):
        (_, _), (lhs_batch, _) = dimension_numbers
        operands.extend([lhs, rhs] if lhs_batch else [lhs])
        return inner(lhs, rhs, dimension_numbers, *args, **kwargs)

    return {**overrides, "dot_general": dot_general}, operands


def _forward(model, params, method, state, inputs, **kwargs):
    """`(logits, observed, operands)` of one forward pass with the method's overrides."""
    overrides = method.overrides(state)
    collecting, operands = _collecting(overrides)
    outputs, _ = model.apply({"params": params}, *inputs, **collecting, **kwargs)
    return outputs["logits"], method.observed(overrides), [np.asarray(x) for x in operands]


def test_sites_are_counted_and_ordered_alike_in_train_and_eval(classifier):
    model, params = classifier
    method = ActivationQuantization(SPEC, ranges="ema")
    state = method.init(params, None)
    assert max_sites(params) == SITES and state["lo"].shape == (SITES,)
    inputs = _inputs(0)
    _, observed_eval, eval_operands = _forward(model, params, method, state, inputs)
    _, observed_train, train_operands = _forward(
        model,
        params,
        method,
        state,
        inputs,
        deterministic=False,
        rngs={"dropout": jax.random.key(0)},
    )
    assert len(eval_operands) == len(train_operands) == SITES
    assert [x.shape for x in eval_operands] == [x.shape for x in train_operands]
    assert bool(observed_eval["present"].all()) and bool(observed_train["present"].all())
    # The recorded statistic of site k is the min/max of the k-th operand.
    np.testing.assert_allclose(observed_eval["lo"], [x.min() for x in eval_operands], rtol=1e-6)
    np.testing.assert_allclose(observed_eval["hi"], [x.max() for x in eval_operands], rtol=1e-6)
    # Dropping a layer leaves its sites absent (not observed, not changed).
    dropped = compose([method, LayerDrop(num_layers=2, drop=1, strategy="top")])
    both_state = dropped.init(params, None)
    overrides = dropped.overrides(both_state)
    model.apply({"params": params}, *inputs, **overrides)
    present = np.asarray(dropped.observed(overrides)[0]["present"])
    assert present.sum() == SITES - 10 and present[: SITES - 10].all()


def test_more_sites_than_sized_is_a_clear_error(classifier):
    model, params = classifier
    method = ActivationQuantization(SPEC, ranges="ema")
    small = calibration_lib.empty_ranges(5)
    with pytest.raises(ValueError, match="more than the 5 activation sites"):
        model.apply({"params": params}, _inputs(0)[0], **method.overrides(small))


def test_ema_ranges_match_a_hand_computation(classifier):
    model, params = classifier
    decay = 0.75
    method = ActivationQuantization(SPEC, ranges="ema", ema_decay=decay)
    state = method.init(params, None)
    expected_lo = expected_hi = None
    for step in range(4):
        _, observed, operands = _forward(model, params, method, state, _inputs(step))
        lo = np.asarray([x.min() for x in operands], np.float64)
        hi = np.asarray([x.max() for x in operands], np.float64)
        if step == 0:  # started from the first batch's min/max
            expected_lo, expected_hi = lo, hi
        else:
            expected_lo = decay * expected_lo + (1 - decay) * lo
            expected_hi = decay * expected_hi + (1 - decay) * hi
        state = method.observe(state, observed)
        np.testing.assert_allclose(state["lo"], expected_lo, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state["hi"], expected_hi, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(state["count"], step + 1)


def test_unseen_sites_use_dynamic_ranges_and_seen_ones_the_state(classifier):
    model, params = classifier
    inputs = _inputs(1)
    method = ActivationQuantization(SPEC, ranges="ema")
    dynamic = ActivationQuantization(SPEC)
    state = method.init(params, None)
    fresh, observed, _ = _forward(model, params, method, state, inputs)
    reference, _, _ = _forward(model, params, dynamic, {}, inputs)
    np.testing.assert_allclose(fresh, reference, rtol=1e-6, atol=1e-6)
    state = method.observe(state, observed)
    static, _, _ = _forward(model, params, method, state, _inputs(2))
    dynamic_other, _, _ = _forward(model, params, dynamic, {}, _inputs(2))
    assert not np.allclose(static, dynamic_other, atol=1e-6)
    # Evaluation reads the state: narrower ranges give other outputs.
    narrow = {**state, "lo": state["lo"] / 4, "hi": state["hi"] / 4}
    changed, _, _ = _forward(model, params, method, narrow, _inputs(2))
    assert not np.allclose(changed, static, atol=1e-4)


def _calibrate(model, params, method, batches):
    state = method.init(params, None)
    for seed in range(batches):
        _, observed, _ = _forward(model, params, method, state, _inputs(seed))
        state = method.observe(state, observed)
    return state


def test_calibration_observes_float_activations_then_freezes(classifier):
    model, params = classifier
    method = ActivationQuantization(SPEC, calibration="minmax", num_calibration_batches=3)
    assert method.calibration_batches() == 3
    state = method.init(params, None)
    plain = model.apply({"params": params}, *_inputs(0))[0]["logits"]
    calibrating, _, _ = _forward(model, params, method, state, _inputs(0))
    np.testing.assert_allclose(calibrating, plain, rtol=1e-6)  # not quantized yet
    state = _calibrate(model, params, method, 3)
    np.testing.assert_array_equal(state["count"], 3)
    quantized, observed, _ = _forward(model, params, method, state, _inputs(0))
    assert not np.allclose(quantized, plain, atol=1e-7)
    frozen = method.observe(state, observed)
    chex.assert_trees_all_equal(frozen, state)


def test_percentile_range_lies_within_the_minmax_range(classifier):
    model, params = classifier
    ranges = {}
    for kind in ("minmax", "percentile"):
        method = ActivationQuantization(SPEC, calibration=kind, num_calibration_batches=3)
        ranges[kind] = _calibrate(model, params, method, 3)
    assert np.all(ranges["percentile"]["lo"] >= ranges["minmax"]["lo"])
    assert np.all(ranges["percentile"]["hi"] <= ranges["minmax"]["hi"])
    assert np.any(ranges["percentile"]["hi"] < ranges["minmax"]["hi"])


def test_percentile_of_a_known_tensor():
    x = jnp.arange(10001, dtype=jnp.float32)  # P(q) is 100 * q exactly
    lo, hi = calibration_lib.percentile_range(x, 99.0)
    np.testing.assert_allclose([lo, hi], [100.0, 9900.0])


def _numpy_fake_quant(x, lo, hi, bits):
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / (2**bits - 1)
    zero = np.round(-lo / scale)
    return (np.clip(np.round(x / scale) + zero, 0, 2**bits - 1) - zero) * scale


@pytest.mark.parametrize("bits", [4, 8])
def test_mse_range_minimizes_error_among_candidates_on_heavy_tails(bits):
    rng = np.random.default_rng(bits)
    x = rng.standard_t(df=2, size=(64, 96)).astype(np.float32)
    spec = QuantSpec(bits, symmetric=False)
    lo, hi = calibration_lib.mse_range(jnp.asarray(x), spec)
    errors = [
        np.mean((_numpy_fake_quant(x, f * x.min(), f * x.max(), bits) - x) ** 2)
        for f in calibration_lib.MSE_FRACTIONS
    ]
    best = calibration_lib.MSE_FRACTIONS[int(np.argmin(errors))]
    np.testing.assert_allclose([lo, hi], [best * x.min(), best * x.max()], rtol=1e-5)
    assert best < 1.0  # heavy tails: clipping pays
    chosen = np.mean((np.asarray(fake_quant(jnp.asarray(x), spec, lo, hi)) - x) ** 2)
    full = np.mean((np.asarray(fake_quant(jnp.asarray(x), spec)) - x) ** 2)
    assert chosen < full


def test_fold_averages_percentile_and_mse_ranges_over_batches():
    ranges = calibration_lib.empty_ranges(3)
    present = jnp.asarray([True, True, False])
    for lo, hi in ((-1.0, 2.0), (-3.0, 4.0)):
        observed = {"lo": jnp.full(3, lo), "hi": jnp.full(3, hi), "present": present}
        ranges = calibration_lib.fold(
            ranges, observed, calibration="mse", calibration_batches=2, ema_decay=None
        )
    np.testing.assert_allclose(ranges["lo"], [-2.0, -2.0, 0.0])
    np.testing.assert_allclose(ranges["hi"], [3.0, 3.0, 0.0])
    np.testing.assert_array_equal(ranges["count"], [2, 2, 0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(ranges="static"), "unknown activation ranges"),
        (dict(calibration="kl", num_calibration_batches=2), "unknown calibration"),
        (dict(calibration="minmax"), "needs calibration batches"),
        (dict(ranges="ema", ema_decay=1.0), "ema_decay"),
    ],
)
def test_bad_settings_are_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ActivationQuantization(SPEC, **kwargs)


def _batch(seed):
    ids, mask = _inputs(seed, batch=8)
    rng = np.random.default_rng(seed)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": jnp.zeros_like(ids),
        "labels": jnp.asarray(rng.integers(0, 2, 8), jnp.int32),
        "weights": jnp.ones(8, jnp.float32),
    }


def test_train_step_with_ema_ranges_traces_once_and_updates_them(classifier):
    model, params = classifier
    method = compose(
        [
            WeightQuantization(QuantSpec(8)),
            ActivationQuantization(SPEC, ranges="ema", ema_decay=0.9),
            LayerDrop(num_layers=2, drop=1, strategy="bottom"),
        ]
    )
    train = ml_collections.ConfigDict(
        dict(learning_rate=1e-3, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0)
    )
    tx = method.wrap_optimizer(make_optimizer(train, 20), params)
    state = TrainState.create(params, tx, 0, method_state=method.init(params, None))
    step = jax.jit(
        chex.assert_max_traces(steps.train_step_fn(model, regression=False, method=method), n=1)
    )
    for i in range(3):
        state, values = step(state, _batch(i))
    assert np.isfinite(float(values["loss"]))
    ranges = state.method_state[1]
    np.testing.assert_array_equal(ranges["count"], [3] * (SITES - 10) + [0] * 10)
    assert np.all(ranges["lo"][: SITES - 10] < ranges["hi"][: SITES - 10])
    report = method.report(state.params, state.method_state)
    assert report["activation_ranges"] == "ema" and report["activation_sites"] == SITES - 10


@pytest.mark.parametrize("size", [1, 2, 7, 1000, 40_001])
@pytest.mark.parametrize("percentile", [60.0, 99.0, 99.99])
def test_percentile_range_matches_numpy_with_ties_and_negatives(size, percentile):
    rng = np.random.default_rng(size)
    x = rng.standard_t(df=2, size=size).astype(np.float32)
    x[: size // 3] = np.round(x[: size // 3])  # ties, -0.0 and 0.0 included
    lo, hi = calibration_lib.percentile_range(jnp.asarray(x), percentile)
    expected = np.percentile(x.astype(np.float64), [100.0 - percentile, percentile])
    np.testing.assert_allclose([lo, hi], expected, rtol=1e-5, atol=1e-6)


def test_kth_largest_is_the_sorted_value():
    x = np.random.default_rng(0).normal(size=513).astype(np.float32)
    ranked = np.sort(x)[::-1]
    for k in (1, 2, 100, 513):
        assert calibration_lib.kth_largest(jnp.asarray(x), k) == ranked[k - 1]
    with pytest.raises(ValueError, match="k must be"):
        calibration_lib.kth_largest(jnp.asarray(x), 0)
