"""Predictor: same logits as training's evaluation, input order, no recompiles; the CLI."""

import functools
import json

import numpy as np
import pytest

import bertjax
from bertjax import models, predict
from bertjax.data import sources, tasks
from bertjax.data import tokenizer as tokenizer_lib
from bertjax.train import evaluation, steps
from bertjax.train import mesh as mesh_lib

LENGTH = 64  # buckets (32, 64): two shapes per predictor keep compilation short


@pytest.fixture(scope="module")
def exports(tmp_path_factory, teacher_dir):
    """Tiny random exports with the real tokenizer: `{name: (dir, model, params)}`.

    'sst2' (labels '0'/'1'), 'rte' (entailment words) and 'unnamed' (HF's
    default LABEL_i names) share one classifier; 'stsb' is a regressor.
    """
    root = tmp_path_factory.mktemp("exports")
    classifier = models.load_pretrained("tiny", head="classification", num_labels=2, seed=1)
    # The regressor reuses the classifier's encoder and its first output unit (no second init).
    model, params = classifier
    kernel, bias = params["classifier"]["kernel"], params["classifier"]["bias"]
    regressor = (
        models.BertModel(model.config, head="regression"),
        {**params, "classifier": {"kernel": kernel[:, :1] * 10, "bias": bias[:1]}},
    )
    built = {}
    for name, (model, params), labels in (
        ("sst2", classifier, tasks.get_task("sst2").labels),
        ("rte", classifier, tasks.get_task("rte").labels),
        ("stsb", regressor, None),
        ("unnamed", classifier, None),
    ):
        out = models.save_pretrained(
            model, params, root / name, tokenizer=str(teacher_dir), labels=labels
        )
        built[name] = (out, model, params)
    return built


@pytest.fixture(scope="module")
def predictor_of(exports):
    """`predictor_of(export, task)`: one shared Predictor per pair (each compiles anew)."""
    cache = {}

    def get(export, task):
        if (export, task) not in cache:
            cache[export, task] = predict.Predictor(
                exports[export][0], task=task, max_seq_length=LENGTH, batch_size=16
            )
        return cache[export, task]

    return get


@functools.cache
def _eval_step(model):
    """The training loop's own jitted eval step (no compression method)."""
    return steps.make_eval_step(model)


def _texts(examples):
    return [e.text_a if e.text_b is None else (e.text_a, e.text_b) for e in examples]


@pytest.mark.parametrize(
    "task_name, export, task_arg, count",
    [("mrpc", "sst2", None, 40), ("sst2", "sst2", None, 40), ("stsb", "stsb", "stsb", 24)],
)
def test_logits_equal_training_evaluation(
    exports, predictor_of, tmp_path, task_name, export, task_arg, count
):
    directory, model, params = exports[export]
    task = tasks.get_task(task_name)
    split = tasks.eval_split(task)
    # Exactly what a training run evaluates: the cached training encoding, its eval batches,
    # its jitted eval step over the 8-device mesh.
    tokenizer = tokenizer_lib.load_tokenizer(directory)
    encoded = tokenizer_lib.load_encoded(
        task, split, tokenizer, LENGTH, limit=count, cache_dir=tmp_path
    )
    mesh = mesh_lib.make_mesh()
    expected = evaluation.predict(
        _eval_step(model), mesh_lib.replicate(params, mesh), {}, encoded, 8, mesh
    )
    assert np.ptp(expected, axis=0).max() > 1e-3  # distinct rows: a misorder would show

    predictor = predictor_of(export, task_arg)  # labels from the export's id2label
    texts = _texts(sources.read_split(task, split, limit=count))
    for ours, theirs in zip(predictor.encode(texts).input_ids, encoded.input_ids, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    result = predictor.predict(texts)
    assert len(result) == count
    np.testing.assert_allclose(result.logits, expected, atol=1e-5, rtol=0)
    if task.is_regression:
        assert result.scores.shape == (count,)
        np.testing.assert_array_equal(result.scores, result.logits[:, 0])
        assert result.probabilities is None and result.labels is None
    else:
        np.testing.assert_array_equal(result.label_ids, expected.argmax(-1))
        assert result.labels == [task.labels[i] for i in expected.argmax(-1)]
        probabilities = np.exp(expected) / np.exp(expected).sum(-1, keepdims=True)
        np.testing.assert_allclose(result.probabilities, probabilities, atol=1e-5)


def test_order_is_restored_and_nothing_recompiles_after_warmup(exports):
    texts = _texts(sources.read_split("rte", "dev", limit=60))
    predictor = bertjax.Predictor(
        exports["rte"][0], task="rte", max_seq_length=LENGTH, batch_size=8
    )
    assert predictor.buckets == (32, 64)
    short = [pair for pair in texts if len(predictor.encode([pair]).input_ids[0]) <= 32][:3]
    assert short, "RTE dev has short pairs"
    predictor.predict(short)
    assert predictor.compilations == 1  # one bucket seen so far: the counter counts traces
    predictor.warmup()
    assert predictor.compilations == 2

    forward = predictor.predict(texts)
    backward = predictor.predict(texts[::-1])
    one = predictor.predict(texts[7:8])
    mixed = predictor.predict(texts[3:50:3] + short)  # other lengths, another partial batch
    assert predictor.compilations == 2
    np.testing.assert_allclose(backward.logits, forward.logits[::-1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(one.logits, forward.logits[7:8], atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        mixed.logits[: -len(short)], forward.logits[3:50:3], atol=1e-5, rtol=0
    )
    assert set(forward.labels) <= {"entailment", "not_entailment"}
    with pytest.raises(ValueError, match="rte takes sentence pairs"):
        predictor.predict(["a single sentence"])


def test_label_names_come_from_the_task_or_the_export(exports, predictor_of):
    texts = ["a fine film", "it is not good at all", "meh"]
    unnamed = predictor_of("unnamed", None).predict(texts)
    assert unnamed.labels is None and unnamed.label_ids.shape == (3,)
    named = predictor_of("sst2", None).predict(texts)  # the same classifier, named labels
    np.testing.assert_array_equal(named.logits, unnamed.logits)
    assert named.labels == [str(i) for i in unnamed.label_ids]
    # The export's own names, read from config.json's id2label.
    read = predict._export_label_names
    config = json.loads((exports["rte"][0] / "config.json").read_text())
    assert read(config, 2) == ("entailment", "not_entailment")
    assert read({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}, 2) is None


def test_bad_inputs_are_clear_errors(exports, predictor_of, teacher_dir):
    sst2 = exports["sst2"][0]
    with pytest.raises(ValueError, match="2 classes, but mnli has 3"):
        predict.Predictor(sst2, task="mnli")
    with pytest.raises(ValueError, match="regression head cannot predict sst2"):
        predict.Predictor(exports["stsb"][0], task="sst2")
    with pytest.raises(ValueError, match="are not mrpc's labels"):
        predict.Predictor(exports["rte"][0], task="mrpc")
    with pytest.raises(ValueError, match="no classification or regression head"):
        predict.Predictor(teacher_dir)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        predict.Predictor("/no/such/export")
    with pytest.raises(ValueError, match="largest bucket"):
        predict.Predictor(sst2, max_seq_length=64, buckets=(16, 32))
    with pytest.raises(ValueError, match="ascending"):
        predict.Predictor(sst2, max_seq_length=64, buckets=(64, 32))
    with pytest.raises(ValueError, match="unknown compute 'fp16'; known: fp32, bf16"):
        predict.Predictor(sst2, compute="fp16")
    predictor = predictor_of("sst2", None)
    with pytest.raises(TypeError, match="not a single string"):
        predictor.predict("a film")
    with pytest.raises(TypeError, match="text 1"):
        predictor.predict(["a", 3])
    assert len(predictor.predict([])) == 0


def _write_tsv(path, source, rows):
    """The header and first `rows` lines of a GLUE file."""
    lines = source.read_text(encoding="utf-8").splitlines()[: rows + 1]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _read_submission(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "index\tprediction"
    indices, values = zip(*(line.split("\t") for line in lines[1:]), strict=True)
    assert list(indices) == [str(i) for i in range(len(indices))]
    return list(values)


def test_cli_writes_a_glue_submission(exports, predictor_of, tmp_path, monkeypatch):
    test_file = _write_tsv(tmp_path / "test.tsv", sources.tsv_path("sst2", "test"), 21)
    monkeypatch.chdir(tmp_path)
    argv = [str(exports["sst2"][0]), "--task", "sst2", "--input", str(test_file)]
    assert predict.main([*argv, "--max-seq-length", str(LENGTH)]) == 0
    values = _read_submission(tmp_path / "SST-2.tsv")  # GLUE's name, in the working dir
    assert len(values) == 21 and set(values) <= {"0", "1"}
    expected = predictor_of("sst2", None).predict_examples(
        sources.read_tsv("sst2", "test", test_file)
    )
    assert values == expected.labels


def test_regression_submission_holds_scores(predictor_of, tmp_path):
    task = tasks.get_task("stsb")
    examples = sources.read_split(task, "test", limit=12)
    assert all(e.label is None for e in examples)
    result = predictor_of("stsb", "stsb").predict_examples(examples)
    rows = predict.submission_rows(task, result)
    values = _read_submission(predict.write_submission(tmp_path / "STS-B.tsv", rows))
    np.testing.assert_allclose([float(v) for v in values], result.scores, atol=6e-4)


def test_cli_dev_split_prints_the_metric(exports, tmp_path, capsys):
    dev = _write_tsv(tmp_path / "dev.tsv", sources.tsv_path("rte", "dev"), 30)
    out = tmp_path / "out" / "dev.tsv"
    argv = [str(exports["rte"][0]), "--task", "RTE", "--split", "dev", "--input", str(dev)]
    assert predict.main([*argv, "--output", str(out), "--max-seq-length", str(LENGTH)]) == 0
    predicted = _read_submission(out)
    assert set(predicted) <= {"entailment", "not_entailment"}
    gold = [tasks.get_task("rte").labels[e.label] for e in sources.read_tsv("rte", "dev", dev)]
    accuracy = np.mean([p == g for p, g in zip(predicted, gold, strict=True)])
    assert f"dev: accuracy={accuracy:.4f}" in capsys.readouterr().out


def test_cli_errors_are_one_line_with_status_2(exports, tmp_path, capsys):
    directory = str(exports["sst2"][0])
    bad = tmp_path / "bad.tsv"
    bad.write_text("index\tsentence\n0\tfine\n1\ttoo\tmany\n")
    cases = [
        (["/no/such/export", "--task", "sst2"], "not a directory"),
        ([directory, "--task", "sst3"], "unknown task 'sst3'"),
        ([directory, "--task", "sst2", "--split", "validation"], "unknown split"),
        ([str(exports["rte"][0]), "--task", "mrpc"], "are not mrpc's labels"),
        ([directory, "--task", "sst2", "--input", str(bad)], "bad.tsv:3: expected 2 columns"),
        ([directory, "--task", "sst2", "--input", str(tmp_path / "none.tsv")], "no such file"),
    ]
    for argv, message in cases:
        assert predict.main([*argv, "--max-seq-length", str(LENGTH)]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("bertjax: error: ") and message in err, err
        assert err.count("\n") == 1, err


def test_submission_names_and_splits():
    mnli, rte = tasks.get_task("mnli"), tasks.get_task("rte")
    assert predict.resolve_split(mnli, "test") == "test_matched"
    assert predict.resolve_split(mnli, "dev") == "dev_matched"
    assert predict.resolve_split(mnli, "test_mismatched") == "test_mismatched"
    assert predict.submission_name(mnli, "test_matched") == "MNLI-m.tsv"
    assert predict.submission_name(mnli, "test_mismatched") == "MNLI-mm.tsv"
    assert predict.submission_name(rte, "test") == "RTE.tsv"
    assert predict.submission_name(rte, "dev") == "RTE.dev.tsv"
    assert predict.submission_name(tasks.get_task("stsb"), "test") == "STS-B.tsv"
