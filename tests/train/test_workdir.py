"""Whether a workdir's run may be resumed, is finished, or belongs to another config."""

import json

import pytest

from bertjax.train import workdir as workdir_lib
from configs import finetune, layer_drop


def _config(**train):
    config = finetune.get_config("model=tiny,task=rte,smoke=True")
    for key, value in train.items():
        config.train[key] = value
    return config


def _finished(path, config, results=None):
    """A workdir as a finished run leaves it (config.json, a checkpoint, results.json)."""
    (path / "checkpoints" / "6").mkdir(parents=True)
    (path / "config.json").write_text(config.to_json_best_effort(indent=2))
    if results is not None:
        (path / "results.json").write_text(json.dumps(results))


def test_differences_skip_fields_that_cannot_change_the_result():
    saved = workdir_lib.config_json(_config())
    requested = _config(learning_rate=5e-5, log_every_steps=7)
    requested.checkpoint.every_steps = 50
    found = workdir_lib.differences(saved, workdir_lib.config_json(requested))
    assert found == [("train.learning_rate", 1e-4, 5e-5)]
    assert workdir_lib.describe(found) == "train.learning_rate 0.0001 -> 5e-05"


def test_measured_layers_are_compared_only_when_requested():
    requested = layer_drop.get_config("model=tiny,strategy=contribution,drop=1")
    saved = workdir_lib.config_json(requested)
    saved["layer_drop"]["layers"] = [1]  # what the run measured and wrote
    assert workdir_lib.differences(saved, workdir_lib.config_json(requested)) == []
    requested.layer_drop.layers = (0,)
    assert workdir_lib.differences(saved, workdir_lib.config_json(requested)) == [
        ("layer_drop.layers", [1], [0])
    ]


def test_prepare_skips_refuses_or_overwrites(tmp_path):
    assert workdir_lib.prepare(tmp_path / "new", _config()) is None  # nothing there: start
    _finished(tmp_path, _config(), results={"metrics": {"accuracy": 0.5}})
    (tmp_path / "notes.txt").write_text("mine")
    assert workdir_lib.prepare(tmp_path, _config()) == {"metrics": {"accuracy": 0.5}}
    changed = _config(num_epochs=2.0)
    with pytest.raises(ValueError, match=r"\(train.num_epochs 1.0 -> 2.0\): pass --overwrite"):
        workdir_lib.prepare(tmp_path, changed)
    assert workdir_lib.prepare(tmp_path, changed, overwrite=True) is None
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]  # only run outputs went


def test_an_unfinished_run_of_the_same_config_resumes(tmp_path):
    _finished(tmp_path, _config())  # a checkpoint, no results.json
    assert workdir_lib.prepare(tmp_path, _config()) is None


def test_a_field_added_later_differs_only_from_its_old_default():
    saved = workdir_lib.config_json(_config())
    del saved["precision"]  # a run saved before config.precision existed
    assert workdir_lib.differences(saved, workdir_lib.config_json(_config())) == []
    requested = _config()
    requested.precision.compute = "bf16"
    found = workdir_lib.differences(saved, workdir_lib.config_json(requested))
    assert found == [("precision.compute", None, "bf16")]
