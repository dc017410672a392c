"""Calibration passes before training: PTQ activation ranges, contribution layer dropping."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertjax import models
from bertjax.data.tokenizer import Encoded
from bertjax.train import calibration, loop
from bertjax.train import mesh as mesh_lib
from bertjax.train.state import TrainState
from configs import layer_drop, quant_ptq
from methods.pruning.layer_drop import least_contributing
from methods.quant import ActivationQuantization, QuantSpec


def _config(layers):
    return models.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
    )


def _encoded(count=40, seed=0):
    rng = np.random.default_rng(seed)
    ids = [rng.integers(1, 64, rng.integers(4, 16)).astype(np.int32) for _ in range(count)]
    return Encoded(
        input_ids=ids,
        token_type_ids=[np.zeros_like(x) for x in ids],
        labels=np.zeros(count, np.int32),
        max_seq_length=16,
    )


def test_minmax_calibration_equals_numpy_min_max_of_the_float_operands():
    model, params = models.build(_config(2), "classification")
    encoded, mesh, batches = _encoded(), mesh_lib.make_mesh(), 3
    method = ActivationQuantization(
        QuantSpec(8, symmetric=False), calibration="minmax", num_calibration_batches=batches
    )
    state = TrainState.create(params, optax.sgd(0.1), 0, method_state=method.init(params, None))
    state = calibration.calibrate(
        model, method, mesh_lib.replicate(state, mesh), encoded, 8, 0, mesh, disable=True
    )

    operands = []

    def recording(lhs, rhs, dimension_numbers, *args, **kwargs):
        (_, _), (lhs_batch, _) = dimension_numbers
        operands.extend([lhs, rhs] if lhs_batch else [lhs])
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, *args, **kwargs)

    lows, highs = [], []
    for inputs in calibration.calibration_batches(encoded, 8, 0, batches):
        operands.clear()
        model.apply({"params": params}, *inputs.values(), dot_general=recording)
        lows.append([np.min(x) for x in operands])
        highs.append([np.max(x) for x in operands])
    ranges = jax.device_get(state.method_state)
    np.testing.assert_allclose(ranges["lo"], np.min(lows, axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ranges["hi"], np.max(highs, axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ranges["count"], batches)


def test_calibration_batches_continue_into_the_next_epoch():
    encoded = _encoded(count=20)  # 3 batches of 8 per epoch
    batches = list(calibration.calibration_batches(encoded, 8, 0, 5))
    assert len(batches) == 5 and set(batches[0]) == {
        "input_ids",
        "attention_mask",
        "token_type_ids",
    }


def test_contribution_picks_the_layer_that_passes_its_input_through():
    model, params = models.build(_config(3), "classification")
    layers = params["bert"]["encoder"]["layer"]
    for i in ("0", "2"):  # layers that change their input a lot
        for block in (layers[i]["attention"]["output"], layers[i]["output"]):
            block["dense"]["kernel"] = block["dense"]["kernel"] * 50.0
    # Layer 1 adds nothing to its residual: with the LayerNorms at their init
    # (scale 1, bias 0) it re-normalizes an already normalized input, ~ identity.
    for block in (layers["1"]["attention"]["output"], layers["1"]["output"]):
        block["dense"] = jax.tree_util.tree_map(jnp.zeros_like, block["dense"])
    mesh = mesh_lib.make_mesh()
    similarity = calibration.contribution_similarity(
        model, mesh_lib.replicate(params, mesh), _encoded(), 8, 0, 2, mesh
    )
    assert similarity.shape == (3,) and similarity[1] > 0.999
    assert similarity[1] > similarity[0] and similarity[1] > similarity[2]
    assert least_contributing(similarity, 1) == (1,)


def test_ptq_run_calibrates_evaluates_and_exports_without_training(tmp_path, shrink, monkeypatch):
    arg = "model=tiny,task=mrpc,smoke=True,wbits=4,abits=8,calibration=percentile,batches=3"
    config = shrink(quant_ptq.get_config(arg))
    results = loop.train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["metrics"] == results["metrics"] and set(results["metrics"]) == {"accuracy", "f1"}
    assert results["steps"] == 0 and results["method"] == "quant_ptq_w4a8_percentile"
    assert results["calibration"] == "percentile" and results["calibration_batches"] == 3
    assert results["activation_ranges"] == "calibrated"
    assert results["activation_sites"] == 2 * 10 + 2  # tiny: 2 layers
    model, params = models.load_pretrained(tmp_path / "export", head="classification")
    query = params["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
    assert max(len(np.unique(query[:, c])) for c in range(query.shape[1])) <= 16
    # A rerun restores the calibrated state instead of calibrating again.
    monkeypatch.setattr(calibration, "calibrate", pytest.fail)
    again = loop.train_and_evaluate(config, tmp_path)
    assert again["metrics"] == results["metrics"]


def test_contribution_layer_drop_run(tmp_path, shrink):
    config = shrink(layer_drop.get_config("model=tiny,task=rte,smoke=True,drop=1"))
    config.layer_drop.strategy = "contribution"
    config.layer_drop.calibration_batches = 2
    results = loop.train_and_evaluate(config, tmp_path)
    assert len(results["layer_similarity"]) == 2 and len(results["layers_dropped"]) == 1
    dropped = results["layers_dropped"][0]
    assert dropped == int(np.argmax(results["layer_similarity"]))
    assert results["layers_kept"] == [1 - dropped]
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["layer_drop"]["layers"] == [dropped]
    model, _ = models.load_pretrained(tmp_path / "export", head="classification")
    assert model.config.num_hidden_layers == 1
