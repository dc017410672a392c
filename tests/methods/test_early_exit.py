"""Early exit: criteria against a plain reference, the method's heads and losses, a run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import models
from bertjax.inference import early_exit as runtime
from bertjax.train import loop
from configs import early_exit as early_exit_config
from methods.dynamic import exits
from methods.dynamic.early_exit import EXITS, EarlyExit, exit_logits, split


def _reference_exit(per_layer, kind, value, regression=False, delta=0.1):
    """Plain Python: the exit layer of one example from its per-layer logits [L, C]."""
    count, previous = 0, None
    for layer, logits in enumerate(per_layer):
        if layer == len(per_layer) - 1:
            return layer
        if kind == "entropy":
            p = np.exp(logits - logits.max())
            p /= p.sum()
            if -(p * np.log(p)).sum() < value:
                return layer
            continue
        if previous is not None:
            same = (
                abs(logits[0] - previous[0]) < delta
                if regression
                else int(np.argmax(logits)) == int(np.argmax(previous))
            )
            count = count + 1 if same else 0
        previous = logits
        if count >= value:
            return layer


@pytest.mark.parametrize(
    ("kind", "value", "regression"),
    [("entropy", 0.3, False), ("entropy", 0.6, False), ("patience", 1, False),
     ("patience", 2, False), ("patience", 2, True)],
)  # fmt: skip
def test_exit_layers_match_a_plain_reference(kind, value, regression):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((200, 6, 1 if regression else 3)) * 2.0
    if regression:  # slow drift so that |change| < 0.1 happens
        logits = np.cumsum(rng.standard_normal((200, 6, 1)) * 0.12, axis=1)
    criterion = exits.Criterion(kind, value, regression)
    got = exits.exit_layers(criterion, logits)
    expected = [_reference_exit(row, kind, value, regression) for row in logits]
    np.testing.assert_array_equal(got, expected)
    assert len(set(got.tolist())) >= 3  # the data exercises several exit layers


def test_criteria_reject_bad_values():
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        exits.Criterion("patience", 0)
    with pytest.raises(ValueError, match="needs class probabilities"):
        exits.Criterion("entropy", 0.1, regression=True)
    with pytest.raises(ValueError, match="unknown early-exit strategy"):
        EarlyExit(strategy="fastbert")
    with pytest.raises(ValueError, match="unknown exit-head pooling 'max'"):
        EarlyExit(pooling="max")


CONFIG = models.BertConfig(
    vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=16,
)  # fmt: skip


def _model_and_batch(strategy="pabee", seed=0, rows=8, pooling="cls"):
    model = models.BertModel(CONFIG, head="classification", num_labels=3)
    rng = np.random.default_rng(seed)
    ids = jnp.asarray(rng.integers(1, 100, (rows, 12)), jnp.int32)
    mask = jnp.asarray(np.arange(12)[None] < rng.integers(3, 13, (rows, 1)), jnp.int32)
    types = jnp.zeros_like(ids)
    params = model.init(jax.random.key(seed), ids, mask, types)["params"]
    method = EarlyExit(strategy=strategy, num_layers=4, pooling=pooling)
    params, _ = method.init(params, {"params": jax.random.key(seed + 1)})
    # Larger exit classifiers, so that entropies spread over the thresholds.
    for head in params[EXITS].values():
        head["classifier"]["kernel"] = head["classifier"]["kernel"] * 300.0
    return model, params, method, (ids, mask, types)


@pytest.mark.parametrize(
    ("strategy", "pooling"), [("deebert", "cls"), ("pabee", "cls"), ("pabee", "mean")]
)
def test_exit_heads_read_each_layer(strategy, pooling):
    model, params, method, (ids, mask, types) = _model_and_batch(strategy, pooling=pooling)
    assert ("pooler" in params[EXITS]["0"]) == (strategy == "deebert" and pooling == "cls")
    assert ("mean_pooler" in params[EXITS]["0"]) == (pooling == "mean")
    assert sorted(params[EXITS]) == ["0", "1", "2"]
    _, inter = model.apply({"params": method.present(params, {}, 0, False)[0]}, ids, mask, types,
                           collect=("hidden",))  # fmt: skip
    layer_logits = method.layer_logits(params, inter, mask)
    pooler = params["bert"]["pooler"]["dense"]
    real = np.asarray(mask, np.float32)[..., None]
    for i, logits in enumerate(layer_logits):
        head = params[EXITS][str(i)]
        hidden = np.asarray(inter[f"hidden/{i}"])
        if pooling == "mean":  # the mean over each row's real tokens only
            own, features = head["mean_pooler"], (hidden * real).sum(1) / real.sum(1)
        else:
            own, features = head.get("pooler", pooler), hidden[:, 0]
        pooled = np.tanh(features @ own["kernel"] + own["bias"])
        expected = pooled @ head["classifier"]["kernel"] + head["classifier"]["bias"]
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    if pooling == "mean":
        with pytest.raises(ValueError, match="needs the attention mask"):
            exit_logits(params, 0, inter["hidden/0"])


def test_pabee_loss_weights_layers_by_depth_and_deebert_sums_the_exits():
    model, params, _, (ids, mask, types) = _model_and_batch()
    batch = {"labels": jnp.asarray([0, 1, 2, 0, 1, 2, 0, 1]), "weights": jnp.ones(8),
             "attention_mask": mask}  # fmt: skip
    _, inter = model.apply({"params": params}, ids, mask, types, collect=("hidden",))
    task = jnp.float32(0.7)
    pabee, deebert = EarlyExit("pabee", 4), EarlyExit("deebert", 4)
    total, metrics = pabee.loss(task, (None, inter), None, batch, params, {}, 0)
    layer = [float(metrics[f"exit_loss/{i}"]) for i in range(3)]
    expected = (1 * layer[0] + 2 * layer[1] + 3 * layer[2] + 4 * 0.7) / 10
    assert float(total) == pytest.approx(expected, rel=1e-6)
    total, metrics = deebert.loss(task, (None, inter), None, batch, params, {}, 0)
    assert float(total) == pytest.approx(sum(layer), rel=1e-6)  # task loss left out


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_runtime_exit_at_layer_k_gives_the_first_k_layers_and_head_k(pooling):
    model, params, method, (ids, mask, types) = _model_and_batch(pooling=pooling)
    runner = runtime.ExitRunner(model, params)
    full = runner.full(ids, mask, types)  # [B, L, C]
    for row in range(4):
        one = [a[row : row + 1] for a in (ids, mask, types)]
        logits, layer = runner.single(exits.Criterion("entropy", 0.4), *one)
        # The plain model run through layers 0..k, then head k.
        _, inter = model.apply({"params": method.present(params, {}, 0, False)[0]}, *one,
                               collect=("hidden",), interventions=None)  # fmt: skip
        hidden = inter[f"hidden/{layer}"]
        expected = (
            exit_logits(params, layer, hidden, one[1]) if layer < 3
            else model.apply({"params": method.present(params, {}, 0, False)[0]}, *one)[0]["logits"]
        )  # fmt: skip
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
        replay = exits.exit_layers(exits.Criterion("entropy", 0.4), full[row : row + 1])
        assert layer == replay[0]


@pytest.mark.parametrize(
    ("kind", "value", "pooling"), [("entropy", 0.5, "cls"), ("patience", 1, "cls"),
                                   ("entropy", 0.5, "mean")]
)  # fmt: skip
def test_compacted_batches_agree_with_one_at_a_time_and_keep_row_order(kind, value, pooling):
    model, params, _, inputs = _model_and_batch(rows=9, seed=3, pooling=pooling)
    runner = runtime.ExitRunner(model, params)
    criterion = exits.Criterion(kind, value)
    logits, exit_at = runner.batched(criterion, *inputs)
    replay = exits.exit_layers(criterion, runner.full(*inputs))
    np.testing.assert_array_equal(exit_at, replay)
    assert len(set(exit_at.tolist())) >= 2  # rows really left at different layers
    for row in range(9):
        one, layer = runner.single(criterion, *[a[row : row + 1] for a in inputs])
        assert layer == exit_at[row]
        np.testing.assert_allclose(logits[row], one[0], rtol=1e-5, atol=1e-5)
    # One executable per layer and bucket, compiled once: a second pass compiles nothing.
    sizes = [layer._cache_size() for layer in runner._layers]
    runner.batched(criterion, *inputs)
    assert [layer._cache_size() for layer in runner._layers] == sizes
    assert all(size <= len(runtime.BUCKETS) for size in sizes) and sizes[0] == 1


def test_one_compilation_serves_every_threshold():
    model, params, _, inputs = _model_and_batch()
    runner = runtime.ExitRunner(model, params)
    one = [a[:1] for a in inputs]
    layers = {runner.single(exits.Criterion("entropy", 0.1), *one, value=t)[1]
              for t in (0.01, 0.3, 0.6, 2.0)}  # fmt: skip
    assert len(runner._single) == 1
    (jitted,) = runner._single.values()
    assert jitted._cache_size() == 1
    assert len(layers) >= 2


@pytest.mark.parametrize(
    ("strategy", "pooling"),
    [("deebert", "mean"), pytest.param("pabee", "cls", marks=pytest.mark.slow)],
)  # PABEE's loss and optimizer are checked above; its run is the slow variant
def test_early_exit_run_trains_the_heads_scores_the_sweep_and_exports(
    tmp_path, shrink, strategy, pooling
):
    arg = f"model=tiny,task=mrpc,smoke=True,strategy={strategy},pooling={pooling}"
    config = shrink(early_exit_config.get_config(arg))
    config.early_exit.thresholds = (0.3, 0.69)
    config.early_exit.patiences = (1, 3)
    results = loop.train_and_evaluate(config, tmp_path / "run")
    suffix = "_mean" if pooling == "mean" else ""
    assert results["method"] == f"early_exit_{strategy}{suffix}"
    report = results["early_exit"]
    assert [(p["criterion"], p["value"]) for p in report["sweep"]] == [
        ("entropy", 0.3), ("entropy", 0.69), ("patience", 1), ("patience", 3)
    ]  # fmt: skip
    assert len(report["layer_metrics"]) == 2  # tiny: 2 layers
    for point in report["sweep"]:
        assert sum(point["exit_share"]) == pytest.approx(1.0, abs=1e-3)
        assert 1.0 <= point["mean_exit_layer"] <= 2.0
    # Patience 3 cannot fire in 2 layers: every example runs the whole model.
    assert report["sweep"][3]["mean_exit_layer"] == 2.0
    assert report["sweep"][3]["metrics"] == results["metrics"]
    model, params = runtime.load(tmp_path / "run" / "export")
    assert ("mean_pooler" in params[EXITS]["0"]) == (pooling == "mean")  # exported, read back
    _, stored = runtime.load(tmp_path / "run" / "export", int8=True)  # the backbone in int8
    assert stored["bert"]["encoder"]["layer"]["0"]["output"]["dense"]["kernel"]["qvalue"].dtype == (
        jnp.int8
    )
    assert stored[EXITS]["0"]["classifier"]["kernel"].dtype == jnp.float32
    initial = loop.create_train_state(config).state.params
    heads_moved = not np.allclose(params[EXITS]["0"]["classifier"]["kernel"],
                                  initial[EXITS]["0"]["classifier"]["kernel"])  # fmt: skip
    assert heads_moved
    backbone = params["bert"]["encoder"]["layer"]["0"]["output"]["dense"]["kernel"]
    start = np.asarray(initial["bert"]["encoder"]["layer"]["0"]["output"]["dense"]["kernel"])
    if strategy == "deebert":  # stage 2: the backbone is frozen
        np.testing.assert_array_equal(backbone, start)
    else:
        assert not np.allclose(backbone, start)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["early_exit"]["sweep"][0]["exit_share"] == report["sweep"][0]["exit_share"]


def test_an_int8_backbone_exits_early_too():
    """Dynamic on static: the exits of a model stored in int8 (W8A8) are those replayed
    from its own layers, and its last layer is the stored-int8 model's output."""
    from methods.quant import storage

    model, params, _, inputs = _model_and_batch(rows=9, seed=5, pooling="mean")
    model_params, heads = split(params)
    stored = storage.quantize_params(model_params, storage.DEFAULT_SELECT)
    runner = runtime.ExitRunner(model, {**stored, EXITS: heads})
    full = runner.full(*inputs)
    plain = model.apply({"params": stored}, *inputs)[0]["logits"]
    np.testing.assert_allclose(full[:, -1], plain, rtol=1e-5, atol=1e-5)
    assert not np.allclose(full, runtime.ExitRunner(model, params).full(*inputs), atol=1e-4)
    criterion = exits.Criterion("entropy", 0.5)
    _, exit_at = runner.batched(criterion, *inputs)
    np.testing.assert_array_equal(exit_at, exits.exit_layers(criterion, full))
