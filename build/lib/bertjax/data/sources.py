"""Reading GLUE splits into `Example`s, from GLUE TSV files or from TFDS.

The TSV reader is strict on purpose: GLUE files contain stray `"` characters,
so they are read with QUOTE_NONE and every row must have exactly as many
fields as the header. Anything else raises `DataError` naming the file and the
1-based line, instead of silently merging or dropping rows.

The TFDS reader goes through `tfds.data_source` (ArrayRecord), which needs no
TensorFlow; `tfds.load` would.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from bertjax import paths
from bertjax.data.tasks import Task, get_task, is_labeled


class DataError(ValueError):
    """A data file does not have the layout or labels its task expects."""


@dataclasses.dataclass
class Example:
    """One row: the text (pair) and its label.

    `label` is the class index (int) for classification, the float score for
    regression, and None for unlabelled test splits.
    """

    text_a: str
    text_b: str | None
    label: int | float | None


SOURCES = ("tsv", "tfds")


def _check_split(task: Task, split: str) -> None:
    if split not in task.splits:
        known = ", ".join(task.splits)
        raise ValueError(f"unknown split {split!r} for {task.name}; known: {known}")


def tsv_path(task: str | Task, split: str, data_dir: str | Path | None = None) -> Path:
    """`<data_dir>/glue/<TASK>/<file>` for a split; `data_dir` defaults to `paths.data_root()`."""
    task = get_task(task)
    _check_split(task, split)
    root = Path(data_dir) if data_dir is not None else paths.data_root()
    return root / "glue" / task.dir_name / task.splits[split]


def read_split(
    task: str | Task,
    split: str,
    data_dir: str | Path | None = None,
    source: str = "tsv",
    limit: int = 0,
) -> list[Example]:
    """Reads one split of a GLUE task.

    Args:
      task: a task name or `Task`.
      split: a key of `task.splits` ('train', 'dev', 'dev_matched', 'test', ...).
      data_dir: for 'tsv', the data root holding `glue/<TASK>/` (default
        `paths.data_root()`); for 'tfds', the TFDS data dir (default TFDS's own).
      source: 'tsv' or 'tfds'.
      limit: if positive, only the first `limit` examples (in file order).

    Returns:
      The examples in file order.
    """
    task = get_task(task)
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if source == "tsv":
        return read_tsv(task, split, tsv_path(task, split, data_dir), limit)
    if source == "tfds":
        return read_tfds(task, split, data_dir, limit)
    raise ValueError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")


def _parse_label(task: Task, raw: str, where: str) -> int | float:
    raw = raw.strip()
    if task.is_regression:
        try:
            return float(raw)
        except ValueError:
            raise DataError(f"{where}: label {raw!r} is not a number") from None
    try:
        return task.labels.index(raw)
    except ValueError:
        raise DataError(
            f"{where}: unknown label {raw!r} for {task.name}; expected one of {task.labels}"
        ) from None


def _column_indices(names: Sequence[str], header: Sequence[str], path: Path) -> list[int]:
    missing = [name for name in names if name not in header]
    if missing:
        raise DataError(f"{path}:1: no column(s) {missing} in header {list(header)}")
    return [list(header).index(name) for name in names]


def read_tsv(task: str | Task, split: str, path: str | Path, limit: int = 0) -> list[Example]:
    """Parses a GLUE TSV file of `task` (see `read_split`).

    Test splits (`split` starting with 'test') are read without labels and
    always have a header; labelled splits have one iff `task.has_header`.
    """
    task = get_task(task)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file (set $BERTJAX_DATA or data_dir, or use source='tfds')"
        )
    labeled = is_labeled(split)
    examples = []
    # utf-8-sig drops MRPC's BOM, so its first header field reads 'Quality'.
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if task.has_header or not labeled:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}:1: empty file, expected a header")
        else:
            header = list(task.columns)
        text_index = _column_indices(task.text_columns, header, path)
        label_index = _column_indices([task.label_column], header, path)[0] if labeled else None
        for row in reader:
            # QUOTE_NONE and no embedded line breaks: one row per physical line.
            where = f"{path}:{reader.line_num}"
            if len(row) != len(header):
                raise DataError(f"{where}: expected {len(header)} columns, got {len(row)}")
            texts = [row[i].strip() for i in text_index]
            label = None if label_index is None else _parse_label(task, row[label_index], where)
            examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label))
            if limit and len(examples) >= limit:
                break
    return examples


def tfds_split(split: str) -> str:
    """GLUE file split name -> TFDS split name ('dev' -> 'validation', ...)."""
    return split.replace("dev", "validation", 1) if split.startswith("dev") else split


def _as_text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _records(source, keys: range) -> list:
    """Batched reads (`__getitems__`, parallel in ArrayRecord), else one by one.

    The fallback exists for `tfds.testing.mock_data`, whose mocked `__getitems__`
    is stored without binding `self` and raises TypeError when called.
    """
    try:
        return source.__getitems__(list(keys))
    except TypeError:
        return [source[key] for key in keys]


def read_tfds(
    task: str | Task, split: str, data_dir: str | Path | None = None, limit: int = 0
) -> list[Example]:
    """Reads `task.tfds_name` through `tfds.data_source` (no TensorFlow needed).

    TFDS class labels use the same class order as `task.labels`; its test
    splits carry label -1, returned as None.
    """
    task = get_task(task)
    _check_split(task, split)
    import tensorflow_datasets as tfds

    # Registers the 'glue' builder, which tfds does not import by itself without TensorFlow.
    import tensorflow_datasets.text.glue  # noqa: F401

    source = tfds.data_source(task.tfds_name, split=tfds_split(split), data_dir=data_dir)
    count = len(source) if not limit else min(limit, len(source))
    labeled = is_labeled(split)
    examples = []
    chunk = 4096
    for start in range(0, count, chunk):
        for record in _records(source, range(start, min(start + chunk, count))):
            texts = [_as_text(record[name]).strip() for name in task.tfds_text_features]
            label = None
            if labeled:
                label = float(record["label"]) if task.is_regression else int(record["label"])
                if not task.is_regression and not 0 <= label < len(task.labels):
                    raise DataError(f"{task.tfds_name}[{split}]: label {label} out of range")
            examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label))
    return examples
