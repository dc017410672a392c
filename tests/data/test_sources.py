"""Reading GLUE splits: real files from shared/data, synthetic files for the missing tasks."""

import collections
import importlib.util
import math

import pytest

from bertjax import paths
from bertjax.data import sources
from bertjax.data.tasks import get_task

# (task, split, rows, {label: count}) from shared/data/README.md.
REAL_SPLITS = [
    ("cola", "train", 8551, {1: 6023, 0: 2528}),
    ("cola", "dev", 1043, {1: 721, 0: 322}),
    ("sst2", "train", 67349, {1: 37569, 0: 29780}),
    ("sst2", "dev", 872, {1: 444, 0: 428}),
    ("mrpc", "train", 3668, {1: 2474, 0: 1194}),
    ("mrpc", "dev", 408, {1: 279, 0: 129}),
    ("rte", "train", 2490, {0: 1249, 1: 1241}),
    ("rte", "dev", 277, {0: 146, 1: 131}),
    ("qnli", "dev", 5463, {0: 2702, 1: 2761}),
    ("wnli", "train", 635, {1: 312, 0: 323}),
    ("wnli", "dev", 71, {1: 31, 0: 40}),
    ("stsb", "train", 5749, None),
    ("stsb", "dev", 1500, None),
]
TEST_SPLITS = [
    ("cola", 1063),
    ("sst2", 1821),
    ("mrpc", 1725),
    ("rte", 3000),
    ("stsb", 1379),
    ("qnli", 5463),
    ("wnli", 146),
]

needs_data = pytest.mark.skipif(
    not (paths.data_root() / "glue").is_dir(), reason="shared GLUE data not found"
)


@needs_data
@pytest.mark.parametrize("task, split, rows, label_counts", REAL_SPLITS)
def test_real_files_row_and_label_counts(task, split, rows, label_counts):
    examples = sources.read_split(task, split)
    assert len(examples) == rows
    if label_counts is None:
        assert all(isinstance(e.label, float) and 0.0 <= e.label <= 5.0 for e in examples)
    else:
        assert dict(collections.Counter(e.label for e in examples)) == label_counts
    pair = task not in ("cola", "sst2")
    assert all((e.text_b is not None) == pair for e in examples)
    assert all(e.text_a and e.text_a == e.text_a.strip() for e in examples)


@needs_data
@pytest.mark.parametrize("task, rows", TEST_SPLITS)
def test_real_test_files_have_no_labels(task, rows):
    examples = sources.read_split(task, "test")
    assert len(examples) == rows
    assert all(e.label is None and e.text_a for e in examples)


@needs_data
def test_mrpc_bom_and_first_row():
    first = sources.read_split("mrpc", "train", limit=1)[0]
    assert first.label == 1
    assert first.text_a.startswith('Amrozi accused his brother , whom he called " the witness "')
    assert first.text_b.startswith('Referring to him as only " the witness " , Amrozi')


@needs_data
def test_sst2_trailing_space_stripped_and_cola_last_row_without_newline():
    assert sources.read_split("sst2", "dev", limit=1)[0].text_a.endswith("journey .")
    last = sources.read_split("cola", "dev")[-1]
    assert last.text_a and last.label in (0, 1)


@needs_data
def test_stsb_float_labels():
    first = sources.read_split("stsb", "train", limit=2)
    assert first[0].label == 5.0 and isinstance(first[0].label, float)
    assert first[0].text_a == "A plane is taking off."


@needs_data
def test_limit_takes_the_head():
    head = sources.read_split("rte", "train", limit=5)
    assert head == sources.read_split("rte", "train")[:5]


def write_tsv(root, task_dir, file_name, rows, bom=False):
    folder = root / "glue" / task_dir
    folder.mkdir(parents=True, exist_ok=True)
    text = ("\ufeff" if bom else "") + "\n".join("\t".join(row) for row in rows) + "\n"
    (folder / file_name).write_text(text, encoding="utf-8")
    return folder / file_name


def test_synthetic_qqp(tmp_path):
    header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    write_tsv(
        tmp_path,
        "QQP",
        "train.tsv",
        [
            header,
            ["0", "1", "2", 'How do I "learn', "What is x? ", "1"],
            ["1", "3", "4", "Why?", "Why not?", "0"],
        ],
    )
    write_tsv(tmp_path, "QQP", "test.tsv", [["id", "question1", "question2"], ["0", "a", "b"]])
    train = sources.read_split("qqp", "train", data_dir=tmp_path)
    # The unbalanced quote must not swallow the next row (QUOTE_NONE).
    assert train == [
        sources.Example('How do I "learn', "What is x?", 1),
        sources.Example("Why?", "Why not?", 0),
    ]
    assert sources.read_split("QQP", "test", data_dir=tmp_path) == [sources.Example("a", "b", None)]


MNLI_TRAIN_HEADER = [
    "index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
    "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label",
]  # fmt: skip
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]


def mnli_row(header, premise, hypothesis, label):
    row = [f"x{i}" for i in range(len(header))]
    row[8], row[9], row[-1] = premise, hypothesis, label
    return row


def test_synthetic_mnli_splits(tmp_path):
    write_tsv(
        tmp_path,
        "MNLI",
        "train.tsv",
        [MNLI_TRAIN_HEADER, mnli_row(MNLI_TRAIN_HEADER, "P0", "H0", "neutral")],
    )
    for split, label in (("dev_matched", "contradiction"), ("dev_mismatched", "entailment")):
        write_tsv(
            tmp_path,
            "MNLI",
            f"{split}.tsv",
            [MNLI_DEV_HEADER, mnli_row(MNLI_DEV_HEADER, f"P {split}", "H", label)],
        )
    assert sources.read_split("mnli", "train", data_dir=tmp_path) == [
        sources.Example("P0", "H0", 1)
    ]
    matched = sources.read_split("mnli", "dev_matched", data_dir=tmp_path)
    mismatched = sources.read_split("mnli", "dev_mismatched", data_dir=tmp_path)
    assert matched == [sources.Example("P dev_matched", "H", 2)]
    assert mismatched == [sources.Example("P dev_mismatched", "H", 0)]


def test_synthetic_qnli_train(tmp_path):
    write_tsv(
        tmp_path,
        "QNLI",
        "train.tsv",
        [
            ["index", "question", "sentence", "label"],
            ["0", "Who?", "Him.", "entailment"],
            ["1", "What?", '" That.', "not_entailment"],
        ],
    )
    assert sources.read_split("qnli", "train", data_dir=tmp_path) == [
        sources.Example("Who?", "Him.", 0),
        sources.Example("What?", '" That.', 1),
    ]


def test_headerless_cola_and_bom_header(tmp_path):
    write_tsv(tmp_path, "CoLA", "dev.tsv", [["gj04", "1", "", "Fine."], ["gj04", "0", "*", "Bad"]])
    assert [e.label for e in sources.read_split("cola", "dev", data_dir=tmp_path)] == [1, 0]
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    write_tsv(tmp_path, "MRPC", "dev.tsv", [header, ["0", "1", "2", "a", "b"]], bom=True)
    assert sources.read_split("mrpc", "dev", data_dir=tmp_path) == [sources.Example("a", "b", 0)]


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = write_tsv(
        tmp_path,
        "RTE",
        "train.tsv",
        [
            ["index", "sentence1", "sentence2", "label"],
            ["0", "a", "b", "entailment"],
            ["1", "a\tstray tab", "b", "entailment"],
        ],
    )
    with pytest.raises(sources.DataError, match=rf"^{path}:3: expected 4 columns, got 5$"):
        sources.read_split("rte", "train", data_dir=tmp_path)


def test_short_headerless_row(tmp_path):
    path = write_tsv(tmp_path, "CoLA", "train.tsv", [["gj04", "1", "", "ok"], ["gj04", "1"]])
    with pytest.raises(sources.DataError, match=rf"{path}:2: expected 4 columns, got 2"):
        sources.read_split("cola", "train", data_dir=tmp_path)


def test_unknown_label_names_file_and_line(tmp_path):
    path = write_tsv(
        tmp_path,
        "SST-2",
        "train.tsv",
        [["sentence", "label"], ["good", "1"], ["bad", "0"], ["meh", "2"]],
    )
    with pytest.raises(sources.DataError, match=rf"{path}:4: unknown label '2' for sst2"):
        sources.read_split("sst2", "train", data_dir=tmp_path)


def test_bad_regression_label_and_missing_column(tmp_path):
    header = ["index", "sentence1", "sentence2", "score"]
    path = write_tsv(tmp_path, "STS-B", "train.tsv", [header, ["0", "a", "b", "high"]])
    with pytest.raises(sources.DataError, match=rf"{path}:2: label 'high' is not a number"):
        sources.read_split("stsb", "train", data_dir=tmp_path)
    path = write_tsv(
        tmp_path, "WNLI", "dev.tsv", [["index", "sentence1", "label"], ["0", "a", "1"]]
    )
    with pytest.raises(sources.DataError, match=rf"{path}:1: no column\(s\) \['sentence2'\]"):
        sources.read_split("wnli", "dev", data_dir=tmp_path)


def test_data_error_is_value_error():
    assert issubclass(sources.DataError, ValueError)


def test_missing_file_and_unknown_split(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "glue" / "QQP" / "train.tsv")):
        sources.read_split("qqp", "train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown split 'dev' for mnli"):
        sources.read_split("mnli", "dev", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown source 'csv'"):
        sources.read_split("rte", "dev", source="csv")


def test_tfds_split_names():
    assert sources.tfds_split("dev") == "validation"
    assert sources.tfds_split("dev_matched") == "validation_matched"
    assert sources.tfds_split("test_mismatched") == "test_mismatched"
    assert sources.tfds_split("train") == "train"


# tfds.testing.mock_data works without TensorFlow and without network because
# read_tfds goes through tfds.data_source (tfds.load would need TensorFlow).
@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_datasets") is None, reason="tensorflow_datasets missing"
)
@pytest.mark.parametrize(
    "task, split", [("rte", "dev"), ("stsb", "train"), ("mnli", "dev_mismatched"), ("sst2", "test")]
)
def test_tfds_source_with_mock_data(task, split):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=7, policy=tfds.testing.MockPolicy.USE_CODE):
        examples = sources.read_split(task, split, source="tfds")
        head = sources.read_split(task, split, source="tfds", limit=3)
    assert len(examples) == 7 and head == examples[:3]
    spec = get_task(task)
    for example in examples:
        assert isinstance(example.text_a, str)
        assert (example.text_b is not None) == spec.is_pair
        if split == "test":
            assert example.label is None
        elif spec.is_regression:
            assert isinstance(example.label, float) and not math.isnan(example.label)
        else:
            assert example.label in range(len(spec.labels))
