"""Static activation ranges: sites by module path, EMA (Q8BERT), calibration statistics,
and their composition with layer dropping and Theseus module replacing."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bertjax import models
from bertjax.models.interventions import Matmul, matmul_sites, site_of, site_tree, sites_in
from bertjax.train import steps
from bertjax.train.optimizer import make_optimizer
from bertjax.train.state import TrainState
from methods.base import Method, compose
from methods.distill.theseus import ModuleReplacing
from methods.pruning.layer_drop import LayerDrop
from methods.quant import ActivationQuantization, QuantSpec, WeightQuantization, fake_quant
from methods.quant import calibration as calibration_lib

CONFIG = models.BertConfig(
    vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
)
# Per layer: q, k, v, attention output, FFN in, FFN out, and both operands of
# the two attention products; plus the pooler and the classifier.
SITES_PER_LAYER = 6 + 4
SITES = 2 * SITES_PER_LAYER + 2
SPEC = QuantSpec(8, symmetric=False)
RNGS = {"state": jax.random.key(0)}


@pytest.fixture(scope="module")
def classifier():
    return models.build(CONFIG, "classification")


def _batch(seed, batch=4, length=9):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 64, (batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, length // 2 :] = 0
    return {
        "input_ids": jnp.asarray(ids),
        "attention_mask": jnp.asarray(mask),
        "token_type_ids": jnp.zeros_like(jnp.asarray(ids)),
        "labels": jnp.asarray(rng.integers(0, 2, batch), jnp.int32),
        "weights": jnp.ones(batch, jnp.float32),
    }


class Recording(Matmul):
    """`inner`'s matmul intervention, keeping every operand it is given, by site."""

    def __init__(self, inner: Matmul):
        self.inner, self.operands = inner, {}
        self.records = getattr(inner, "records", False)

    def operand(self, x, site):
        assert site not in self.operands, f"site {site} visited twice"
        self.operands[site] = x
        return self.inner.operand(x, site)

    def dot_general(self, *args, **kwargs):
        return self.inner.dot_general(*args, **kwargs)


class Recorded:
    """`method` as `steps.forward` sees it, its matmul intervention wrapped in `Recording`."""

    intermediates = ()

    def __init__(self, method):
        self.method, self.matmul = method, None

    def present(self, params, state, step, train):
        params, interventions = self.method.present(params, state, step, train)
        self.matmul = Recording(interventions.matmul or Matmul())
        return params, interventions.replace_fields(matmul=self.matmul)


_FORWARDS = {}  # jitted per (model, method, ...): the closure keeps the model, so ids stay unique


def _forward(model, params, method, state, batch, *, train=False, rng=None):
    """`(logits, stats, operands)` of one jitted `steps.forward`, the operands by site."""
    key = (id(model), method, train, rng is None)
    if key not in _FORWARDS:

        def run(params, state, batch, rng):
            recorded = Recorded(method)
            outputs, _, stats = steps.forward(
                model, recorded, params, state, 0, batch, train=train, rng=rng
            )
            return outputs["logits"], stats, recorded.matmul.operands

        _FORWARDS[key] = jax.jit(run)
    return jax.device_get(_FORWARDS[key](params, state, batch, rng))


def _values(tree, key, marker="count"):
    """{site: float(entry[key])} of a site tree (method state or `quant_stats`)."""
    return {site: float(site_of(tree, site)[key]) for site in sites_in(tree, marker)}


_UPDATES = {}


def _update(method, state, stats):
    """`method.update` after a forward-only pass (no gradient), jitted."""
    if method not in _UPDATES:
        _UPDATES[method] = jax.jit(
            lambda state, stats: method.update(state, None, None, {"stats": stats}, 0)
        )
    return jax.device_get(_UPDATES[method](state, stats))


def test_every_site_is_recorded_once_under_its_path_with_its_operands_range(classifier):
    model, params = classifier
    method = ActivationQuantization(SPEC, ranges="ema")
    _, state = method.init(params, RNGS)
    assert len(matmul_sites(params)) == SITES and sites_in(state, "count") == matmul_sites(params)
    assert "bert/encoder/layer/1/attention/self/qk_key" in matmul_sites(params)
    assert "classifier/input" in matmul_sites(params)
    batch = _batch(0)
    _, stats, operands = _forward(model, params, method, state, batch)
    dropout = {"train": True, "rng": jax.random.key(1)}
    _, train_stats, train_operands = _forward(model, params, method, state, batch, **dropout)
    assert tuple(sorted(operands)) == tuple(sorted(train_operands)) == matmul_sites(params)
    assert all(operands[s].shape == train_operands[s].shape for s in operands)
    # Dropout changes the operands after the first dropout; the statistics follow them.
    assert not np.allclose(operands["classifier/input"], train_operands["classifier/input"])
    for recorded, seen in ((stats, operands), (train_stats, train_operands)):
        assert set(_values(recorded, "seen", "seen").values()) == {1.0}
        assert _values(recorded, "lo", "seen") == {s: float(x.min()) for s, x in seen.items()}
        assert _values(recorded, "hi", "seen") == {s: float(x.max()) for s, x in seen.items()}


def test_dropped_layers_are_not_seen_and_keep_their_ranges(classifier):
    model, params = classifier
    method = compose(
        [LayerDrop(num_layers=2, drop=1, strategy="top"), ActivationQuantization(SPEC, "ema")]
    )
    _, state = method.init(params, RNGS)
    _, stats, operands = _forward(model, params, method, state, _batch(0))
    dropped = {s for s in matmul_sites(params) if s.startswith("bert/encoder/layer/1/")}
    assert len(dropped) == SITES_PER_LAYER and not dropped & set(operands)
    seen = _values(stats, "seen", "seen")
    assert {s for s, v in seen.items() if v == 0} == dropped
    quant_state = _update(method, state, stats)[1]
    counts = _values(quant_state, "count")
    assert {s for s, c in counts.items() if c == 0} == dropped
    assert all(_values(quant_state, "hi")[s] == 0.0 for s in dropped)
    assert all(counts[s] == 1 for s in operands)


def test_a_site_missing_from_the_state_is_a_clear_error(classifier):
    model, params = classifier
    method = ActivationQuantization(SPEC, ranges="ema")
    _, state = method.init(params, RNGS)
    del state["bert"]["encoder"]["layer"]["1"]
    with pytest.raises(ValueError, match="layer/1/attention/self/query/input' is not in the"):
        jax.eval_shape(
            lambda: steps.forward(model, method, params, state, 0, _batch(0), train=False)
        )


def test_ema_ranges_match_a_hand_computation(classifier):
    model, params = classifier
    decay = 0.75
    method = ActivationQuantization(SPEC, ranges="ema", ema_decay=decay)
    _, state = method.init(params, RNGS)
    expected_lo = expected_hi = None
    for step in range(3):
        _, stats, operands = _forward(model, params, method, state, _batch(step))
        lo = np.asarray([operands[s].min() for s in matmul_sites(params)], np.float64)
        hi = np.asarray([operands[s].max() for s in matmul_sites(params)], np.float64)
        if step == 0:  # started from the first batch's min/max
            expected_lo, expected_hi = lo, hi
        else:
            expected_lo = decay * expected_lo + (1 - decay) * lo
            expected_hi = decay * expected_hi + (1 - decay) * hi
        state = _update(method, state, stats)
        np.testing.assert_allclose(list(_values(state, "lo").values()), expected_lo, rtol=1e-5)
        np.testing.assert_allclose(list(_values(state, "hi").values()), expected_hi, rtol=1e-5)
        assert set(_values(state, "count").values()) == {step + 1}


def test_unseen_sites_use_dynamic_ranges_and_seen_ones_the_state(classifier):
    model, params = classifier
    method = ActivationQuantization(SPEC, ranges="ema")
    dynamic = ActivationQuantization(SPEC)
    _, state = method.init(params, RNGS)
    fresh, stats, _ = _forward(model, params, method, state, _batch(1))
    reference, _, _ = _forward(model, params, dynamic, {}, _batch(1))
    np.testing.assert_allclose(fresh, reference, rtol=1e-6, atol=1e-6)
    state = _update(method, state, stats)
    static, _, _ = _forward(model, params, method, state, _batch(2))
    dynamic_other, _, _ = _forward(model, params, dynamic, {}, _batch(2))
    assert not np.allclose(static, dynamic_other, atol=1e-6)
    # Evaluation reads the state: narrower ranges give other outputs.
    narrow = jax.tree_util.tree_map(lambda x: x / 4 if x.dtype == jnp.float32 else x, state)
    changed, _, _ = _forward(model, params, method, narrow, _batch(2))
    assert not np.allclose(changed, static, atol=1e-4)


def _calibrate(model, params, method, batches):
    _, state = method.init(params, RNGS)
    for seed in range(batches):
        _, stats, _ = _forward(model, params, method, state, _batch(seed))
        state = _update(method, state, stats)
    return state


def test_calibration_observes_float_activations_then_freezes(classifier):
    model, params = classifier
    method = ActivationQuantization(SPEC, calibration="minmax", num_calibration_batches=3)
    assert method.calibration_batches == 3
    _, state = method.init(params, RNGS)
    plain, _, float_operands = _forward(model, params, Method(), {}, _batch(0))
    calibrating, _, operands = _forward(model, params, method, state, _batch(0))
    np.testing.assert_array_equal(calibrating, plain)  # not quantized yet
    assert all(np.array_equal(operands[s], float_operands[s]) for s in operands)
    state = _calibrate(model, params, method, 3)
    assert set(_values(state, "count").values()) == {3}
    quantized, stats, _ = _forward(model, params, method, state, _batch(0))
    assert not np.allclose(quantized, plain, atol=1e-7)
    frozen = _update(method, state, stats)
    chex.assert_trees_all_equal(frozen, state)


def test_percentile_range_lies_within_the_minmax_range(classifier):
    model, params = classifier
    ranges = {}
    for kind in ("minmax", "percentile"):
        method = ActivationQuantization(SPEC, calibration=kind, num_calibration_batches=2)
        state = _calibrate(model, params, method, 2)
        ranges[kind] = {k: np.asarray(list(_values(state, k).values())) for k in ("lo", "hi")}
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


def _train_config():
    return ml_collections.ConfigDict(
        dict(learning_rate=1e-3, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0)
    )


def test_train_step_folds_the_statistics_of_its_own_forward_into_ema_ranges(classifier):
    model, params = classifier
    decay = 0.9
    method = compose(
        [
            WeightQuantization(QuantSpec(8)),
            ActivationQuantization(SPEC, ranges="ema", ema_decay=decay),
            LayerDrop(num_layers=2, drop=1, strategy="bottom"),
        ]
    )
    params, method_state = method.init(params, RNGS)
    tx = method.wrap_optimizer(make_optimizer(_train_config(), 20), params)
    state = TrainState.create(params, tx, 0, method_state=method_state)
    step = jax.jit(
        chex.assert_max_traces(steps.train_step_fn(model, regression=False, method=method), n=1)
    )
    ran = [s for s in matmul_sites(params) if not s.startswith("bert/encoder/layer/0/")]
    expected = None
    for i in range(3):
        batch = _batch(i, batch=8)
        # The train step's own forward (same params, state and dropout key), outside the step.
        _, _, stats = steps.forward(
            model, method, state.params, state.method_state, state.step, batch,
            train=True, rng=state.step_rng(),
        )  # fmt: skip
        seen = {k: np.asarray([site_of(stats, s)[k] for s in ran]) for k in ("lo", "hi")}
        if expected is None:
            expected = seen
        else:
            expected = {k: decay * expected[k] + (1 - decay) * seen[k] for k in seen}
        state, values = step(state, batch)
        ranges = state.method_state[1]
        for key in ("lo", "hi"):
            got = [float(site_of(ranges, s)[key]) for s in ran]
            np.testing.assert_allclose(got, expected[key], rtol=1e-5, atol=1e-6)
    assert np.isfinite(float(values["loss"]))
    counts = _values(ranges, "count")
    assert {s for s, c in counts.items() if c == 3} == set(ran)
    assert {s for s, c in counts.items() if c == 0} == set(matmul_sites(params)) - set(ran)
    report = method.report(state.params, state.method_state)
    assert report["activation_ranges"] == "ema" and report["activation_sites"] == len(ran)


# Theseus: 4 predecessor layers in 2 modules, each module replaced by one successor layer.
CONFIG4 = models.BertConfig(
    vocab_size=64,
    hidden_size=16,
    num_hidden_layers=4,
    num_attention_heads=2,
    intermediate_size=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
GATES = ((False, True), (True, False))  # which modules run their successor, pass by pass


def _key_with_gate(theseus, step, gate):
    """Theseus key data whose training gate at `step` is `gate`."""
    for seed in range(100):
        data = jax.random.key_data(jax.random.key(seed))
        _, interventions = theseus.present(None, {"key": data}, step, True)
        if tuple(np.asarray(interventions.replace.use_successor).tolist()) == gate:
            return data
    raise AssertionError(f"no key gives the gate {gate}")


def _stacks_that_run(theseus, gate):
    """The encoder layers a gated Theseus forward runs, in order: `layer/i`, `successor/m`."""
    stacks = []
    for m, members in enumerate(theseus.modules):
        stacks += [f"successor/{m}"] if gate[m] else [f"layer/{i}" for i in members]
    return stacks


def _without_theseus(params, stacks):
    """`(params, theseus_site)`: a plain `len(stacks)`-layer model whose layer k is
    `stacks[k]`, and the Theseus site of each of its sites."""
    encoder = params["bert"]["encoder"]
    layers = {}
    for k, stack in enumerate(stacks):
        kind, index = stack.split("/")
        layers[str(k)] = encoder[kind][index]
    plain = {**params, "bert": {**params["bert"], "encoder": {"layer": layers}}}

    def theseus_site(site):
        for k, stack in enumerate(stacks):
            if site.startswith(f"bert/encoder/layer/{k}/"):
                return site.replace(f"layer/{k}/", f"{stack}/", 1)
        return site  # embeddings, pooler, classifier

    return plain, theseus_site


@pytest.fixture(scope="module")
def four_layers():
    return models.build(CONFIG4, "classification")


@pytest.mark.parametrize("kind", [pytest.param("ema", marks=pytest.mark.slow), "calibration"])
def test_ranges_with_theseus_are_those_of_the_layers_that_ran(kind, four_layers):
    """QAT with EMA ranges (train steps) and PTQ calibration (calibration steps) composed
    with Theseus, one compiled step for two gates (`nn.cond`): the sites of what ran, the
    successor's included, get the ranges the same model without Theseus gets; the sites
    of what did not run are not seen (their count stays) and keep their ranges."""
    model, params = four_layers
    theseus = ModuleReplacing(num_layers=4, successors=2)
    if kind == "ema":
        quant = ActivationQuantization(SPEC, ranges="ema", ema_decay=0.5)
    else:
        quant = ActivationQuantization(SPEC, calibration="minmax", num_calibration_batches=2)
    method = compose([theseus, quant])
    params, method_state = method.init(params, RNGS)
    successors = params["bert"]["encoder"]["successor"]  # distinct from their source layers
    params["bert"]["encoder"]["successor"] = jax.tree_util.tree_map(lambda x: x * 1.1, successors)
    sites = matmul_sites(params)
    assert sum(s.startswith("bert/encoder/successor/") for s in sites) == 2 * SITES_PER_LAYER

    if kind == "ema":
        tx = method.wrap_optimizer(make_optimizer(_train_config(), 20), params)
        state = TrainState.create(params, tx, 0, method_state=method_state)
        step_fn = jax.jit(
            chex.assert_max_traces(steps.train_step_fn(model, regression=False, method=method), 1)
        )
    else:
        state = TrainState.create(params, optax.identity(), 0, method_state=method_state)
        calibration_step = steps.make_calibration_step(model, method)

        def step_fn(state, batch):
            new = calibration_step(state.params, state.method_state, batch)
            return state.replace(method_state=new), {}

    # The reference: the same quantization without Theseus, on the 3 layers each gate runs.
    plain_model = model.clone(config=dataclasses.replace(CONFIG4, num_hidden_layers=3))
    for i, gate in enumerate(GATES):
        step = int(state.step)  # calibration passes are all step 0
        gate_key = _key_with_gate(theseus, step, gate)
        state = state.replace(method_state=({"key": gate_key}, state.method_state[1]))
        batch = _batch(i, batch=8)
        before = jax.device_get(state.method_state[1])
        stacks = _stacks_that_run(theseus, gate)
        assert len(stacks) == 3 and f"successor/{gate.index(True)}" in stacks

        ran = {"bert/pooler/dense/input", "classifier/input"}
        ran |= {s for s in sites for p in stacks if s.startswith(f"bert/encoder/{p}/")}

        # The plain model of what this gate runs, its ranges those of the Theseus sites.
        plain, theseus_site = _without_theseus(jax.device_get(state.params), stacks)
        renamed = {p: theseus_site(p) for p in matmul_sites(plain)}  # plain site: Theseus site
        plain_state = site_tree(
            tuple(renamed), {p: site_of(before, s) for p, s in renamed.items()}.get
        )
        _, plain_stats, _ = _forward(plain_model, plain, quant, plain_state, batch, train=True)
        plain_seen = _values(plain_stats, "seen", "seen")
        assert {renamed[p] for p, v in plain_seen.items() if v} == ran
        plain_after = _update(quant, plain_state, plain_stats)
        as_plain = {s: p for p, s in renamed.items()}

        # The Theseus step: what ran as in the plain model (a first fold is the batch's
        # statistic itself, so these are the recorded statistics); the rest untouched.
        state, _ = step_fn(state, batch)
        after = jax.device_get(state.method_state[1])
        for s in sites:
            if s in ran:
                expected = site_of(plain_after, as_plain[s])
                assert int(site_of(after, s)["count"]) == int(expected["count"]), s
                for key in ("lo", "hi"):
                    np.testing.assert_allclose(
                        site_of(after, s)[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=s
                    )
            else:
                chex.assert_trees_all_equal(site_of(after, s), site_of(before, s))
    if kind == "calibration":  # one compiled step ran both gates (the train step: traced once)
        assert calibration_step._cache_size() == 1
    # Every site has run once; the pooler and the classifier in both passes.
    counts = _values(state.method_state[1], "count")
    assert {s for s, c in counts.items() if c != 1} == {
        "bert/pooler/dense/input",
        "classifier/input",
    }
    assert counts["classifier/input"] == 2


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
