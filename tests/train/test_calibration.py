"""Calibration passes before training: PTQ activation ranges, contribution layer dropping."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertjax import models
from bertjax.data import pipeline
from bertjax.data.tokenizer import Encoded
from bertjax.models.interventions import (
    Interventions,
    Matmul,
    matmul_sites,
    site_of,
    sites_in,
)
from bertjax.train import calibration, evaluation, loop, steps
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


class Recording(Matmul):
    """The float matmuls, keeping every activation operand by site."""

    def __init__(self):
        self.operands = {}

    def operand(self, x, site):
        self.operands[site] = x
        return x, None


def _float_operands(model, params, inputs):
    """{site: operand} of the plain float forward (jitted; the operands are outputs)."""

    def run(params, inputs):
        recording = Recording()
        args = (inputs[k] for k in steps.MODEL_INPUTS)
        model.apply({"params": params}, *args, interventions=Interventions(matmul=recording))
        return recording.operands

    return jax.device_get(jax.jit(run)(params, inputs))


def test_minmax_calibration_equals_numpy_min_max_of_the_float_operands():
    model, params = models.build(_config(2), "classification")
    encoded, mesh, batches = _encoded(), mesh_lib.make_mesh(), 3
    method = ActivationQuantization(
        QuantSpec(8, symmetric=False), calibration="minmax", num_calibration_batches=batches
    )
    params, method_state = method.init(params, {})
    state = TrainState.create(params, optax.sgd(0.1), 0, method_state=method_state)
    state = calibration.calibrate(
        model, method, mesh_lib.replicate(state, mesh), encoded, 8, 0, mesh, disable=True
    )
    operands = [
        _float_operands(model, params, inputs)
        for inputs in calibration.calibration_batches(encoded, 8, 0, batches)
    ]
    ranges = jax.device_get(state.method_state)
    sites = sites_in(ranges, "count")
    assert sites == matmul_sites(params) and tuple(sorted(operands[0])) == sites
    for site in sites:
        entry = site_of(ranges, site)
        lo = min(float(np.min(batch[site])) for batch in operands)
        hi = max(float(np.max(batch[site])) for batch in operands)
        np.testing.assert_allclose([entry["lo"], entry["hi"]], [lo, hi], rtol=1e-6, atol=1e-6)
        assert int(entry["count"]) == batches, site


def test_calibration_batches_continue_into_the_next_epoch():
    encoded = _encoded(count=20)  # 3 batches of 8 per epoch
    batches = list(calibration.calibration_batches(encoded, 8, 0, 5))
    assert len(batches) == 5
    assert set(batches[0]) == {"input_ids", "attention_mask", "token_type_ids"}
    epochs = [list(pipeline.train_batches(encoded, 8, 0, epoch)) for epoch in (0, 1)]
    expected = epochs[0] + epochs[1][:2]  # the training order: epoch 0, then epoch 1
    for given, batch in zip(batches, expected, strict=True):
        for key, value in given.items():
            np.testing.assert_array_equal(value, batch[key])
    assert not np.array_equal(epochs[0][0]["input_ids"], epochs[1][0]["input_ids"])


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
    evaluated = []  # the method state each evaluation ran with
    evaluate = evaluation.evaluate

    def recording(eval_step, state, *args):
        evaluated.append(jax.device_get(state.method_state))
        return evaluate(eval_step, state, *args)

    monkeypatch.setattr(evaluation, "evaluate", recording)
    results = loop.train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["metrics"] == results["metrics"] and set(results["metrics"]) == {"accuracy", "f1"}
    assert results["steps"] == 0 and results["method"] == "quant_ptq_w4a8_percentile"
    assert results["calibration"] == "percentile" and results["calibration_batches"] == 3
    assert results["activation_ranges"] == "calibrated"
    assert results["activation_sites"] == 2 * 10 + 2  # tiny: 2 layers
    # Evaluated with the ranges of all 3 calibration batches, at every site.
    ((_, ranges),) = evaluated
    assert {int(site_of(ranges, s)["count"]) for s in sites_in(ranges, "count")} == {3}
    model, params = models.load_pretrained(tmp_path / "export", head="classification")
    query = params["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
    assert max(len(np.unique(query[:, c])) for c in range(query.shape[1])) <= 16
    # A rerun restores the calibrated state instead of calibrating again (without its
    # results.json: a finished run of the same config is skipped, not re-evaluated).
    monkeypatch.setattr(calibration, "calibrate", pytest.fail)
    (tmp_path / "results.json").unlink()
    again = loop.train_and_evaluate(config, tmp_path)
    assert again["metrics"] == results["metrics"]
    chex.assert_trees_all_equal(evaluated[1], evaluated[0])


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
