"""Method configs end to end through `train_and_evaluate` on a tiny random model."""

import json

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from bertjax import models
from bertjax.train import evaluation, loop, loyalty, steps
from configs import bitfit, prune_magnitude
from methods import selectors


def test_magnitude_pruning_run_exports_a_sparse_model(tmp_path, shrink):
    config = shrink(prune_magnitude.get_config("model=tiny,task=mrpc,smoke=True,sparsity=0.75"))
    results = loop.train_and_evaluate(config, tmp_path)
    assert results["method"] == "prune_magnitude"
    assert results["sparsity"] == pytest.approx(0.75, abs=1e-3)
    encoder_kernels = 2 * (4 * 128 * 128 + 2 * 128 * 512)  # tiny: 2 layers, H 128, FFN 512
    assert results["params"] - results["nonzero_params"] >= int(0.75 * encoder_kernels) - 8
    state = load_file(tmp_path / "export" / "model.safetensors")
    query = state["bert.encoder.layer.0.attention.self.query.weight"]
    assert np.mean(query == 0) == pytest.approx(0.75, abs=1e-3)
    assert json.loads((tmp_path / "results.json").read_text())["sparsity"] == results["sparsity"]


@pytest.mark.slow  # 22 s; loyalty and BitFit keep their own default tests
def test_bitfit_composed_with_pruning_runs_and_reports_loyalty(tmp_path, shrink):
    def config_with(sparsity):
        arg = f"model=tiny,task=rte,smoke=True,sparsity={sparsity}"
        return shrink(prune_magnitude.get_config(arg))

    teacher = config_with(0.0)
    loop.train_and_evaluate(teacher, tmp_path / "teacher")
    config = config_with(0.5)
    config.bitfit = bitfit.get_config().bitfit
    config.teacher = str(tmp_path / "teacher" / "export")
    results = loop.train_and_evaluate(config, tmp_path / "student")
    # The method's name is derived from the composition (config.method_order).
    assert results["method"] == "prune_magnitude+bitfit"
    assert results["sparsity"] == pytest.approx(0.5, abs=1e-3)
    student_model, student_params = models.load_pretrained(
        tmp_path / "student" / "export", head="classification"
    )
    paths = selectors.param_paths(student_params)
    sizes = [x.size for x in jax.tree_util.tree_leaves(student_params)]
    trainable = sum(
        n
        for p, n in zip(paths, sizes, strict=True)
        if p.endswith("/bias") or p.startswith("classifier/")
    )
    assert results["trainable_params"] == trainable
    assert results["trainable_fraction"] == pytest.approx(trainable / sum(sizes), rel=1e-12)
    # Loyalty: the exported student against the teacher, on the run's eval examples.
    run = loop.create_train_state(config)
    assert len(run.eval_data) == results["eval_examples"]

    def logits_of(model, params):
        step = steps.make_eval_step(model)
        return evaluation.predict(step, params, {}, run.eval_data, 8, run.mesh)

    student_logits = logits_of(student_model, student_params)
    teacher_logits = logits_of(run.teacher, run.teacher_params)
    assert results["label_loyalty"] == loyalty.label_loyalty(student_logits, teacher_logits)
    assert results["probability_loyalty"] == pytest.approx(
        loyalty.probability_loyalty(student_logits, teacher_logits), abs=1e-5
    )
    assert results["probability_loyalty"] < 1.0  # half the weights gone: not the teacher
    # The teacher is perfectly loyal to itself: its export, evaluated without training.
    itself = config_with(0.0)
    itself.model.name = itself.teacher = config.teacher
    itself.train.num_epochs, itself.export = 0, False
    again = loop.train_and_evaluate(itself, tmp_path / "itself")
    assert again["label_loyalty"] == 1.0
    assert again["probability_loyalty"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    ("module", "arg", "name"),
    [
        pytest.param(  # 13 s; movement scores are unit-tested in test_movement.py
            "prune_movement",
            "sparsity=0.5,scores=adam",
            "prune_movement_hard_adam",
            marks=pytest.mark.slow,
        ),
        ("prune_structured", "heads=0.5,ffn=0.5,importance=gradient", "prune_structured"),
        ("layer_drop", "drop=1,strategy=top", "layer_drop_top1"),
        pytest.param("quant_qat", "wbits=4,abits=8", "quant_qat_w4a8", marks=pytest.mark.slow),
    ],
)
def test_more_method_configs_run_and_export_loadable_models(tmp_path, shrink, module, arg, name):
    import importlib

    config_module = importlib.import_module(f"configs.{module}")
    config = shrink(config_module.get_config(f"model=tiny,task=rte,smoke=True,{arg}"))
    results = loop.train_and_evaluate(config, tmp_path)
    assert results["method"] == name
    model, params = models.load_pretrained(tmp_path / "export", head="classification")
    if module == "prune_structured":
        assert results["heads_kept"] == 2 and model.config.heads_in_layer(0) == 1
        full = sum(
            x.size
            for x in jax.tree_util.tree_leaves(
                models.build(models.variant_config("tiny", vocab_size=30522), "classification")[1]
            )
        )
        # Per layer (H 128, 2 heads of 64, FFN 512): one head's q/k/v columns and
        # output rows, and 256 neurons' input columns, biases and output rows.
        removed = 3 * (128 * 64 + 64) + 64 * 128 + (128 * 256 + 256) + 256 * 128
        assert results["params"] == full - 2 * removed
    if module == "layer_drop":
        assert model.config.num_hidden_layers == 1 and results["layers_kept"] == [0]
    if module == "quant_qat":
        assert results["weight_bits"] == 4 and results["activation_bits"] == 8
        assert results["quantized_bytes"] < results["bytes"]
        query = params["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
        assert max(len(np.unique(query[:, c])) for c in range(query.shape[1])) <= 16
    if module == "prune_movement":  # every kernel has an even size: exactly half of it
        assert results["sparsity"] == 0.5
        query = params["bert"]["encoder"]["layer"]["1"]["attention"]["self"]["query"]["kernel"]
        assert int((query == 0).sum()) == query.size // 2
