"""benchmarks/peer_runtime.py: worker protocol, every backend against PyTorch, the CLI."""

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest

from bertjax import bench, models, paths

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[2]


def _load_cli():
    spec = importlib.util.spec_from_file_location(
        "peer_runtime", REPO / "benchmarks/peer_runtime.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peer = _load_cli()


class FakeBackend:
    """Outputs `input_ids * 2` as floats and records which batches it was bound to."""

    def __init__(self):
        self.bound = []

    def bind(self, batch):
        self.bound.append(batch["input_ids"].shape)
        return lambda: batch["input_ids"] * 2.0


def _npz(path, input_ids):
    ids = np.asarray(input_ids, np.int32)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}
    return str(peer.write_npz(path, batch))


def test_serve_answers_time_predict_errors_and_quit(tmp_path):
    fake = FakeBackend()
    inputs = _npz(tmp_path / "in.npz", np.arange(10).reshape(5, 2))
    out = tmp_path / "out.npy"
    requests = [
        {"op": "time", "inputs": inputs, "warmup": 2, "repeats": 3},
        {"op": "time", "inputs": inputs, "warmup": 0, "repeats": 1},  # bound once, reused
        {"op": "predict", "inputs": inputs, "output": str(out), "batch_size": 2},
        {"op": "nonsense"},
        {"op": "quit"},
        {"op": "time", "inputs": inputs, "warmup": 0, "repeats": 1},  # never read
    ]
    replies = io.StringIO()
    info = {"versions": {"fake": "1"}}
    peer.serve(
        peer.Backend(fake.bind, 123, info),
        io.StringIO("".join(json.dumps(r) + "\n" for r in requests)),
        replies,
    )
    ready, first, second, predicted, error = map(json.loads, replies.getvalue().splitlines())
    assert ready == {"ready": True, "size_bytes": 123, "versions": {"fake": "1"}}
    assert len(first["times_ms"]) == 3 and first["median_ms"] == sorted(first["times_ms"])[1]
    assert len(second["times_ms"]) == 1
    assert predicted == {"rows": 5}
    np.testing.assert_array_equal(np.load(out), 2.0 * np.arange(10).reshape(5, 2))
    assert fake.bound == [(5, 2), (2, 2), (2, 2), (1, 2)]  # time once, predict in chunks of 2
    assert "unknown op 'nonsense'" in error["error"]


def test_rotated_order_and_rows_take_min_of_round_medians():
    assert [peer.rotated("abc", r) for r in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
    times = {
        ("torch-fp32", 1): [[4.0, 5.0, 9.0], [3.0, 6.0, 7.0]],  # medians 5, 6 -> 5
        ("bertjax-fp32", 1): [[1.0, 2.0, 2.5], [2.0, 3.0, 3.0]],  # medians 2, 3 -> 2
    }
    rows = peer.timing_rows(times, {"torch-fp32": 10, "bertjax-fp32": 20}, seq=8)
    assert [(r["backend"], r["ms"], r["medians_ms"]) for r in rows] == [
        ("torch-fp32", 5.0, [5.0, 6.0]),
        ("bertjax-fp32", 2.0, [2.0, 3.0]),
    ]
    assert [r["speedup_vs_torch"] for r in rows] == [1.0, 2.5]


@pytest.fixture(scope="module")
def checkpoint(teacher_dir, tmp_path_factory):
    """A tiny random classifier with the teacher's tokenizer."""
    model, params = models.load_pretrained("tiny", head="classification", num_labels=2)
    root = tmp_path_factory.mktemp("peer")
    return models.save_pretrained(model, params, root / "tiny", tokenizer=str(teacher_dir))


@pytest.fixture(scope="module")
def tiny_and_workers(checkpoint):
    """`((dir, cache, onnx files), workers of every backend)` of the tiny checkpoint."""
    cache = checkpoint.parent / "cache"
    # Workers that need no ONNX file load while this process exports (what
    # `start_workers` does, overlapped with the export).
    workers = {
        name: peer.Worker(name, checkpoint, None, threads=2)
        for name in peer.BACKENDS
        if not name.startswith("ort-")
    }
    try:
        onnx_files = peer.export_onnx(checkpoint, cache)
        for variant in ("fp32", "int8"):
            workers[f"ort-{variant}"] = peer.Worker(
                f"ort-{variant}", checkpoint, onnx_files[variant], threads=2
            )
        for worker in workers.values():
            worker.info = worker.receive()
        yield (checkpoint, cache, onnx_files), {name: workers[name] for name in peer.BACKENDS}
    finally:
        for worker in workers.values():
            worker.quit()
        for worker in workers.values():
            worker.wait()


@pytest.fixture(scope="module")
def tiny(tiny_and_workers):
    return tiny_and_workers[0]


@pytest.fixture(scope="module")
def workers(tiny_and_workers):
    return tiny_and_workers[1]


def _vocab_size(directory: Path) -> int:
    return json.loads((directory / "config.json").read_text())["vocab_size"]


def _padded_batch(rows: int, length: int, vocab: int) -> dict:
    """Random ids, rows of different lengths padded with 0, two segments: unlike the export's."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, length + 1, rows)
    lengths[0] = length
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    input_ids = rng.integers(1000, vocab, (rows, length)).astype(np.int32) * mask
    token_type_ids = (np.arange(length)[None] >= lengths[:, None] // 2).astype(np.int32) * mask
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_type_ids}


def test_every_backend_matches_pytorch_on_padded_batches(tiny, workers, tmp_path):
    import torch
    import transformers

    directory, _, _ = tiny
    batch = _padded_batch(rows=6, length=16, vocab=_vocab_size(directory))
    reference_model = transformers.BertForSequenceClassification.from_pretrained(directory).eval()
    with torch.inference_mode():
        feed = {k: torch.from_numpy(v).long() for k, v in batch.items()}
        reference = reference_model(**feed).logits.numpy()
    inputs = peer.write_npz(tmp_path / "batch.npz", batch)
    for name, worker in workers.items():
        out = tmp_path / f"{name}.npy"
        # One row at a time: shape [1, 16], not the export's [2, 12] (and the one shape
        # bertjax compiles for this test and the timing test; evaluate tests batch 136).
        assert worker.request(op="predict", inputs=inputs, output=out, batch_size=1) == {"rows": 6}
        logits = np.load(out)
        assert logits.shape == (6, 2), name
        error = np.abs(logits - reference).max()
        if name.endswith("fp32"):
            assert error <= 1e-4, (name, error)
        else:
            assert 1e-5 < error <= 0.1 * np.abs(reference).max(), (name, error)  # int8 ran
            assert np.mean(logits.argmax(-1) == reference.argmax(-1)) >= 5 / 6, name


def test_one_tiny_timing_round_through_the_workers(tiny, workers, tmp_path, capsys):
    batch = bench.random_batch(_vocab_size(tiny[0]), 1, 16)
    inputs = {1: peer.write_npz(tmp_path / "b1.npz", batch)}
    times = peer.time_rounds(workers, inputs, rounds=1, repeats=1, warmup=1)
    sizes = {name: worker.info["size_bytes"] for name, worker in workers.items()}
    rows = peer.timing_rows(times, sizes, seq=16)
    assert [row["backend"] for row in rows] == list(peer.BACKENDS)
    for row in rows:
        assert len(row["times_ms"]) == 1 and len(row["times_ms"][0]) == 1
        assert row["ms"] > 0 and row["batch"] == 1 and row["size_bytes"] > 0
    assert rows[0]["speedup_vs_torch"] == 1.0
    by_name = {row["backend"]: row for row in rows}
    # int8 ONNX weights are a quarter of fp32's; torch and bertjax read the same file.
    assert by_name["ort-int8"]["size_bytes"] < 0.4 * by_name["ort-fp32"]["size_bytes"]
    assert by_name["torch-fp32"]["size_bytes"] == by_name["bertjax-int8"]["size_bytes"]
    assert workers["torch-fp32"].info["threads"] == 2
    peer.print_timing(rows, [1])
    table = capsys.readouterr().out
    assert "| backend | batch 1 ms | x vs torch-fp32 (b1) | size MB |" in table
    assert table.count("\n") == 2 + len(peer.BACKENDS)


def test_a_worker_that_cannot_load_reports_why(tiny):
    directory, _, _ = tiny
    with pytest.raises(RuntimeError, match=r"ort-fp32 worker: ValueError: .*needs an \.onnx"):
        with peer.start_workers(["ort-fp32"], directory, {}, threads=1):
            pass


def test_evaluate_scores_every_backend_on_the_same_dev_inputs(tiny, workers, tmp_path):
    if not (paths.data_root() / "glue/MRPC/dev.tsv").is_file():
        pytest.skip("no MRPC dev data")
    directory, _, _ = tiny
    # 408 pairs cut to 32 tokens, 3 batches of 136: one more compile, few torch calls.
    rows = peer.evaluate("mrpc", workers, directory, tmp_path, max_seq_length=32, batch_size=136)
    assert [row["backend"] for row in rows] == list(peer.BACKENDS)
    for row in rows:
        assert row["examples"] == 408 and row["padded_length"] == 32  # pairs fill 32 tokens
        assert {"f1", "accuracy"} <= set(row) and 0 <= row["accuracy"] <= 1
        if row["backend"].endswith("fp32"):
            assert row["agreement_vs_torch"] == 1.0 and row["max_abs_diff_vs_torch"] <= 1e-4
        else:
            assert row["agreement_vs_torch"] >= 0.8, row
            assert 1e-5 < row["max_abs_diff_vs_torch"] < 0.05, row


def test_cli_times_evaluates_and_writes_json(tiny, tmp_path, capsys):
    if not (paths.data_root() / "glue/MRPC/dev.tsv").is_file():
        pytest.skip("no MRPC dev data")
    directory, cache, onnx_files = tiny
    out = tmp_path / "peer.json"
    # ONNX Runtime workers only: they start in a second (the others are tested above).
    result = peer.main(
        [str(directory), "--backends", "ort-fp32", "ort-int8", "--batch", "1", "2"]
        + ["--seq", "16", "--rounds", "2", "--repeats", "1", "--cache", str(cache)]
        + [f"--eval=mrpc={directory}", "--eval-seq", "32", "--json", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    setup = result["setup"]
    assert len(setup["load_average_at_start"]) == 3 and len(setup["load_average_at_end"]) == 3
    assert setup["cpu"] and set(setup["workers"]) == {"ort-fp32", "ort-int8"}
    assert setup["onnx"] == {str(directory.resolve()): {k: str(p) for k, p in onnx_files.items()}}
    timing = [(row["backend"], row["batch"], len(row["medians_ms"])) for row in result["timing"]]
    assert timing == [
        ("ort-fp32", 1, 2),
        ("ort-fp32", 2, 2),
        ("ort-int8", 1, 2),
        ("ort-int8", 2, 2),
    ]
    assert all(row["speedup_vs_torch"] is None for row in result["timing"])  # no torch-fp32
    assert [row["backend"] for row in result["eval"]] == ["ort-fp32", "ort-int8"]
    assert all(row["padded_length"] == 32 for row in result["eval"])
    printed = capsys.readouterr().out
    assert "| backend | batch 1 ms | batch 2 ms | size MB |" in printed
    assert "| mrpc | ort-int8 | f1 " in printed and printed.count("load average") == 2
