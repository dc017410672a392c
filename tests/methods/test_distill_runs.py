"""Distillation configs end to end on tiny models: KD, TinyBERT, BERT-EMD, Theseus."""

import json

import chex
import jax
import numpy as np
import pytest

from bertjax import models
from bertjax.data import tasks
from bertjax.train import loop
from bertjax.train import teacher as teacher_lib
from configs import distill_emd, distill_kd, distill_theseus, distill_tinybert, finetune


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, shrink):
    """A 4-layer, 256-wide teacher fine-tuned for a few steps on SST-2."""
    workdir = tmp_path_factory.mktemp("teacher")
    loop.train_and_evaluate(shrink(finetune.get_config("model=mini,task=sst2,smoke=True")), workdir)
    return str(workdir / "export")


def _run(module, arg, teacher, workdir, shrink, method):
    config = shrink(module.get_config(f"{arg},teacher={teacher},task=sst2,smoke=True"))
    results = loop.train_and_evaluate(config, workdir)
    assert results["method"] == method  # derived from the composed methods
    assert json.loads((workdir / "results.json").read_text())["method"] == method
    return results, models.load_pretrained(workdir / "export", head="classification")


def test_truncated_student_starts_from_teacher_layers_0_and_2(tiny_teacher, shrink):
    config = shrink(distill_kd.get_config(f"student=teacher:2,teacher={tiny_teacher},task=sst2"))
    model, params, _, _ = loop.build_model(config, tasks.get_task("sst2"))
    _, teacher_params = models.load_pretrained(tiny_teacher, head="classification")
    assert model.config.num_hidden_layers == 2
    student, teacher = (
        params["bert"]["encoder"]["layer"],
        teacher_params["bert"]["encoder"]["layer"],
    )
    assert set(student) == {"0", "1"}
    chex.assert_trees_all_equal(student["0"], teacher["0"])
    chex.assert_trees_all_equal(student["1"], teacher["2"])
    chex.assert_trees_all_equal(params["bert"]["embeddings"], teacher_params["bert"]["embeddings"])


def test_truncated_student_kd(tmp_path, tiny_teacher, shrink):
    results, (model, params) = _run(
        distill_kd, "student=teacher:2", tiny_teacher, tmp_path, shrink, "distill_kd_soft_ce"
    )
    assert model.config.num_hidden_layers == 2
    assert results["params"] == sum(x.size for x in jax.tree_util.tree_leaves(params))


def test_tinybert_narrow_student_gets_a_projection_that_is_not_exported(
    tmp_path, tiny_teacher, shrink
):
    results, (model, params) = _run(
        distill_tinybert,
        "student=tiny,map=top",
        tiny_teacher,
        tmp_path,
        shrink,
        "distill_tinybert_top",
    )
    assert model.config.hidden_size == 128 and "distill" not in params
    assert results["layer_map"] == [[0, 2], [1, 3]]
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(m["loss"]) for m in metrics if "loss" in m)


@pytest.mark.slow  # 13 s; the EMD loss and its flows are unit-tested in test_emd.py
def test_emd_run_logs_flows_and_weights(tmp_path, tiny_teacher, shrink):
    results, (model, _) = _run(
        distill_emd, "student=teacher:2", tiny_teacher, tmp_path, shrink, "distill_emd"
    )
    assert model.config.num_hidden_layers == 2
    weights = results["emd_hidden_weights"]
    assert len(weights["teacher"]) == 4 and len(weights["student"]) == 2
    assert sum(weights["teacher"]) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.slow  # 16 s; the replace intervention is unit-tested in test_theseus.py
def test_theseus_run_exports_the_successor_model(tmp_path, tiny_teacher, shrink):
    results, (model, params) = _run(
        distill_theseus, "successors=2", tiny_teacher, tmp_path, shrink, "theseus_linear"
    )
    assert model.config.num_hidden_layers == 2
    assert results["successor_layers"] == 2
    # The export is the successor-only model: exactly its params, two layers fewer.
    _, teacher_params = models.load_pretrained(tiny_teacher, head="classification")
    layer = sum(
        x.size for x in jax.tree_util.tree_leaves(teacher_params["bert"]["encoder"]["layer"]["0"])
    )
    total = sum(x.size for x in jax.tree_util.tree_leaves(params))
    assert results["params"] == total
    assert total == sum(x.size for x in jax.tree_util.tree_leaves(teacher_params)) - 2 * layer


@pytest.mark.slow  # 21 s: two runs compared
def test_cached_teacher_logits_train_like_the_live_teacher(tmp_path, tiny_teacher, shrink):
    losses, evals = {}, {}
    for cache in (False, True):
        config = shrink(
            distill_kd.get_config(f"student=teacher:2,teacher={tiny_teacher},task=sst2,smoke=True")
        )
        config.distill.cache_teacher = cache
        workdir = tmp_path / f"cache-{cache}"
        evals[cache] = loop.train_and_evaluate(config, workdir)["metrics"]
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
        losses[cache] = [json.loads(line)["loss"] for line in lines if '"loss"' in line]
    cached = np.load(tmp_path / "cache-True" / teacher_lib.CACHE_FILE)["logits"]
    assert cached.shape == (32, 2) and np.all(np.isfinite(cached))
    assert not (tmp_path / "cache-False" / teacher_lib.CACHE_FILE).exists()
    assert len(losses[True]) == len(losses[False]) > 1
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
    assert evals[True] == pytest.approx(evals[False], abs=1e-6)


def test_cache_teacher_refuses_methods_that_read_intermediates(tiny_teacher):
    config = distill_tinybert.get_config(f"student=teacher:2,teacher={tiny_teacher},task=sst2")
    config.distill.cache_teacher = True
    with pytest.raises(ValueError, match="intermediates"):
        teacher_lib.check_cacheable(config, ("hidden",))
    assert teacher_lib.check_cacheable(config, ()) is True
