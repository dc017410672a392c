"""Task table: name lookup, label counts, metrics, agreement with TFDS's GLUE builder."""

import pytest

from bertjax.data import tasks


@pytest.mark.parametrize(
    "alias, name",
    [
        ("rte", "rte"),
        ("RTE", "rte"),
        ("sst2", "sst2"),
        ("SST-2", "sst2"),
        ("sst_2", "sst2"),
        ("sts-b", "stsb"),
        ("STS-B", "stsb"),
        ("stsb", "stsb"),
        ("CoLA", "cola"),
        ("glue/mnli", "mnli"),
        ("QQP", "qqp"),
    ],
)
def test_get_task_accepts_aliases(alias, name):
    assert tasks.get_task(alias).name == name


def test_get_task_returns_task_instances_unchanged():
    task = tasks.get_task("mrpc")
    assert tasks.get_task(task) is task


def test_unknown_task_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown task 'squad'; known: cola, sst2, mrpc"):
        tasks.get_task("squad")


def test_all_nine_glue_tasks():
    assert set(tasks.TASKS) == {
        "cola",
        "sst2",
        "mrpc",
        "qqp",
        "stsb",
        "mnli",
        "qnli",
        "rte",
        "wnli",
    }


@pytest.mark.parametrize(
    "name, count", [("mnli", 3), ("stsb", 1), ("rte", 2), ("cola", 2), ("qnli", 2)]
)
def test_num_labels(name, count):
    assert tasks.num_labels(name) == count


def test_eval_split():
    assert tasks.eval_split("mnli") == "dev_matched"
    assert tasks.eval_split("rte") == "dev"
    assert {"dev_matched", "dev_mismatched"} <= set(tasks.get_task("mnli").splits)


@pytest.mark.parametrize(
    "name, metric_names, main",
    [
        ("cola", ("matthews_correlation",), "matthews_correlation"),
        ("sst2", ("accuracy",), "accuracy"),
        ("mrpc", ("f1", "accuracy"), "f1"),
        ("qqp", ("f1", "accuracy"), "f1"),
        ("stsb", ("pearson", "spearmanr"), "pearson"),
        ("mnli", ("accuracy",), "accuracy"),
        ("qnli", ("accuracy",), "accuracy"),
        ("rte", ("accuracy",), "accuracy"),
        ("wnli", ("accuracy",), "accuracy"),
    ],
)
def test_official_metrics(name, metric_names, main):
    task = tasks.get_task(name)
    assert task.metric_names == metric_names
    assert task.main_metric == main


def test_tasks_are_hashable_and_consistent():
    for task in tasks.TASKS.values():
        hash(task)
        assert task.is_regression == (task.labels is None)
        assert len(task.text_columns) == len(task.tfds_text_features) in (1, 2)
        assert task.has_header or task.columns is not None
        assert tasks.eval_split(task) in task.splits


def test_split_labelling():
    assert tasks.is_labeled("train") and tasks.is_labeled("dev_mismatched")
    assert not tasks.is_labeled("test") and not tasks.is_labeled("test_matched")


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_class_order_and_features_match_tfds(name):
    """TFDS integer labels must mean the same class as our label indices."""
    glue = pytest.importorskip("tensorflow_datasets.text.glue")
    task = tasks.get_task(name)
    config = {c.name: c for c in glue.Glue.BUILDER_CONFIGS}[task.tfds_name.split("/")[1]]
    assert tuple(config.text_features) == task.tfds_text_features
    if task.labels is None:
        assert config.label_classes is None
    elif task.labels == ("0", "1"):
        # TSV labels 0/1 are the indices into TFDS's [negative-ish, positive-ish] names.
        assert len(config.label_classes) == 2
    else:
        assert tuple(config.label_classes) == task.labels
