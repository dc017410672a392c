"""GLUE task descriptions: file layout, columns, labels and official metrics.

Everything that differs between GLUE tasks lives in one `Task` record, so the
readers, the metrics and the training loop never branch on a task's name.
Columns are always looked up by name: files without a header row (CoLA
train/dev) name their columns in `Task.columns`.
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Task:
    """One GLUE task.

    Attributes:
      name: canonical lower-case name without punctuation ('sst2', 'mnli').
      dir_name: folder under `<data_root>/glue/` ('SST-2', 'MNLI').
      text_columns: header names of the one or two text columns.
      label_column: header name of the label column (absent from test files).
      labels: the raw label strings in the TSV, in class-index order, or None
        for regression. The order matches the `ClassLabel` of TFDS `glue/<cfg>`,
        so a TFDS integer label is the same class index.
      is_regression: True for STS-B (float score in [0, 5]).
      metric_names: official GLUE metric names, in the order GLUE reports them.
      main_metric: the single number used to select checkpoints.
      splits: split name -> file name inside the task folder. Splits whose
        name starts with 'test' have no labels.
      has_header: whether the labelled (train/dev) files start with a header.
        GLUE test files always have one (CoLA's test.tsv included).
      columns: column names of header-less files, used in place of a header.
      tfds_name: TFDS builder and config ('glue/rte').
      tfds_text_features: TFDS feature names matching `text_columns`.
    """

    name: str
    dir_name: str
    text_columns: tuple[str, ...]
    label_column: str
    labels: tuple[str, ...] | None
    is_regression: bool
    metric_names: tuple[str, ...]
    main_metric: str
    # Excluded from the hash so that a Task can be a static jit argument or a cache key.
    splits: dict[str, str] = dataclasses.field(hash=False)
    has_header: bool
    tfds_name: str
    tfds_text_features: tuple[str, ...]
    columns: tuple[str, ...] | None = None

    @property
    def is_pair(self) -> bool:
        """Whether examples are sentence pairs (two text columns)."""
        return len(self.text_columns) == 2


def is_labeled(split: str) -> bool:
    """GLUE test splits ('test', 'test_matched', ...) carry no labels."""
    return not split.startswith("test")


_STANDARD_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

_TASKS = (
    Task(
        name="cola",
        dir_name="CoLA",
        text_columns=("sentence",),
        label_column="label",
        labels=_BINARY,
        is_regression=False,
        metric_names=("matthews_correlation",),
        main_metric="matthews_correlation",
        splits=dict(_STANDARD_SPLITS),
        has_header=False,
        columns=("source", "label", "original_label_mark", "sentence"),
        tfds_name="glue/cola",
        tfds_text_features=("sentence",),
    ),
    Task(
        name="sst2",
        dir_name="SST-2",
        text_columns=("sentence",),
        label_column="label",
        labels=_BINARY,
        is_regression=False,
        metric_names=("accuracy",),
        main_metric="accuracy",
        splits=dict(_STANDARD_SPLITS),
        has_header=True,
        tfds_name="glue/sst2",
        tfds_text_features=("sentence",),
    ),
    Task(
        name="mrpc",
        dir_name="MRPC",
        text_columns=("#1 String", "#2 String"),
        label_column="Quality",
        labels=_BINARY,
        is_regression=False,
        metric_names=("f1", "accuracy"),
        main_metric="f1",
        splits=dict(_STANDARD_SPLITS),
        has_header=True,
        tfds_name="glue/mrpc",
        tfds_text_features=("sentence1", "sentence2"),
    ),
    Task(
        name="qqp",
        dir_name="QQP",
        text_columns=("question1", "question2"),
        label_column="is_duplicate",
        labels=_BINARY,
        is_regression=False,
        metric_names=("f1", "accuracy"),
        main_metric="f1",
        splits=dict(_STANDARD_SPLITS),
        has_header=True,
        tfds_name="glue/qqp",
        tfds_text_features=("question1", "question2"),
    ),
    Task(
        name="stsb",
        dir_name="STS-B",
        text_columns=("sentence1", "sentence2"),
        label_column="score",
        labels=None,
        is_regression=True,
        metric_names=("pearson", "spearmanr"),
        main_metric="pearson",
        splits=dict(_STANDARD_SPLITS),
        has_header=True,
        tfds_name="glue/stsb",
        tfds_text_features=("sentence1", "sentence2"),
    ),
    Task(
        name="mnli",
        dir_name="MNLI",
        text_columns=("sentence1", "sentence2"),
        label_column="gold_label",
        labels=("entailment", "neutral", "contradiction"),
        is_regression=False,
        metric_names=("accuracy",),
        main_metric="accuracy",
        splits={
            "train": "train.tsv",
            "dev_matched": "dev_matched.tsv",
            "dev_mismatched": "dev_mismatched.tsv",
            "test_matched": "test_matched.tsv",
            "test_mismatched": "test_mismatched.tsv",
        },
        has_header=True,
        tfds_name="glue/mnli",
        tfds_text_features=("premise", "hypothesis"),
    ),
    Task(
        name="qnli",
        dir_name="QNLI",
        text_columns=("question", "sentence"),
        label_column="label",
        labels=_NLI2,
        is_regression=False,
        metric_names=("accuracy",),
        main_metric="accuracy",
        splits=dict(_STANDARD_SPLITS),
        has_header=True,
        tfds_name="glue/qnli",
        tfds_text_features=("question", "sentence"),
    ),
    Task(
        name="rte",
        dir_name="RTE",
        text_columns=("sentence1", "sentence2"),
        label_column="label",
        labels=_NLI2,
        is_regression=False,
        metric_names=("accuracy",),
        main_metric="accuracy",
        splits=dict(_STANDARD_SPLITS),
        has_header=True,
        tfds_name="glue/rte",
        tfds_text_features=("sentence1", "sentence2"),
    ),
    Task(
        name="wnli",
        dir_name="WNLI",
        text_columns=("sentence1", "sentence2"),
        label_column="label",
        labels=_BINARY,
        is_regression=False,
        metric_names=("accuracy",),
        main_metric="accuracy",
        splits=dict(_STANDARD_SPLITS),
        has_header=True,
        tfds_name="glue/wnli",
        tfds_text_features=("sentence1", "sentence2"),
    ),
)

TASKS: dict[str, Task] = {task.name: task for task in _TASKS}


def _normalize(name: str) -> str:
    # 'SST-2', 'sst_2', 'STS-B' and 'glue/rte' all reduce to the canonical name.
    name = name.lower().removeprefix("glue/")
    return re.sub(r"[^a-z0-9]", "", name)


def get_task(name: str | Task) -> Task:
    """Returns the task called `name`, ignoring case and punctuation.

    Accepts 'rte', 'RTE', 'sst2', 'SST-2', 'sts-b', 'stsb', 'glue/mnli' and
    `Task` instances (returned unchanged). Unknown names raise ValueError.
    """
    if isinstance(name, Task):
        return name
    task = TASKS.get(_normalize(name))
    if task is None:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return task


def num_labels(task: str | Task) -> int:
    """Width of the classifier output: number of classes, 1 for regression."""
    task = get_task(task)
    return 1 if task.labels is None else len(task.labels)


def eval_split(task: str | Task) -> str:
    """The default evaluation split: 'dev', or 'dev_matched' for MNLI."""
    task = get_task(task)
    return "dev" if "dev" in task.splits else "dev_matched"
