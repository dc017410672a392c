"""Latency/size measurement: exact timing logic on a fake clock, the CLI end to end."""

import importlib.util
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import bench, models
from bertjax.models.interventions import Interventions
from methods.quant import INT8_PRODUCTS

REPO = Path(__file__).resolve().parents[2]


def _load_cli():
    spec = importlib.util.spec_from_file_location("latency_cli", REPO / "benchmarks/latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeClock:
    """A clock that moves only when a fake computation is waited for."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Pending:
    """An asynchronous result: its cost is paid when `block_until_ready` is called."""

    def __init__(self, clock, cost):
        self.clock, self.cost = clock, cost

    def block_until_ready(self):
        self.clock.now += self.cost
        return self


def test_time_fn_blocks_on_each_result_and_skips_warmup():
    clock = FakeClock()
    calls = []

    def fn(cost):
        calls.append(cost)
        clock.now += 0.001  # dispatch: also timed
        return {"out": [Pending(clock, cost)]}

    times = bench.time_fn(fn, 2.0, warmup=3, repeats=4, timer=clock)
    assert len(calls) == 7
    assert times == pytest.approx([2.001] * 4)


def test_time_fn_on_real_jax_returns_positive_times():
    x = jnp.ones((64, 64))
    times = bench.time_fn(lambda a: a @ a, x, warmup=1, repeats=3)
    assert len(times) == 3 and all(t > 0 for t in times)
    with pytest.raises(ValueError, match="repeats"):
        bench.time_fn(lambda: None, repeats=0)


def test_interleave_runs_round_robin_after_warming_each():
    clock, order = FakeClock(), []

    def candidate(name, cost):
        def run():
            order.append(name)
            return Pending(clock, cost)

        return run

    times = bench.interleave(
        {"a": candidate("a", 1.0), "b": candidate("b", 2.0), "c": candidate("c", 3.0)},
        warmup=1,
        repeats=3,
        timer=clock,
    )
    assert "".join(order) == "abc" + "abc" + "bca" + "cab"
    assert times == {"a": [1.0] * 3, "b": [2.0] * 3, "c": [3.0] * 3}
    assert bench.summarize([0.003, 0.001, 0.002]) == pytest.approx(
        {"best_ms": 1.0, "median_ms": 2.0, "repeats": 3}
    )


def test_model_size_counts_params_bytes_and_nonzeros_exactly():
    tree = {
        "dense": {"kernel": np.array([[0.0, 1.0], [2.0, 0.0]], np.float32)},
        "bias": jnp.zeros(3, jnp.bfloat16),
        "codes": [np.array([1, 0, 3, 4, 0], np.int8)],
    }
    assert bench.model_size(tree) == {"params": 12, "bytes": 16 + 6 + 5, "nonzero_params": 5}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny random classifier, and a smaller one with pruned heads and FFN neurons."""
    root = tmp_path_factory.mktemp("checkpoints")
    dense = models.variant_config("tiny", vocab_size=512)
    small = models.variant_config(
        "tiny", vocab_size=512, pruned_heads=((1,), ()), intermediate_sizes=(128, 256)
    )
    out = {}
    for name, config in (("dense", dense), ("small", small)):
        model, params = models.build(config, "classification", num_labels=3, seed=1)
        out[name] = models.save_pretrained(model, params, root / name)
    return out


def test_forward_of_an_exported_compressed_model_is_smaller(checkpoints):
    dense = bench.build_forward(checkpoints["dense"], batch_size=2, seq_len=8)
    small = bench.build_forward(checkpoints["small"], batch_size=2, seq_len=8)
    assert dense().shape == small().shape == (2, 3)  # the checkpoint's own classifier
    assert small.model.config.heads_in_layer(0) == 1
    removed = 3 * (128 * 64 + 64) + 64 * 128 + 2 * (512 - 128) * 128 + (512 - 128)
    removed += 2 * (512 - 256) * 128 + (512 - 256)
    dense_size, small_size = bench.model_size(dense.params), bench.model_size(small.params)
    assert dense_size["params"] - small_size["params"] == removed
    encoder = bench.build_forward(checkpoints["dense"], batch_size=2, seq_len=8, head=None)
    assert encoder().shape == (2, 8, 128)


def test_cli_measures_two_checkpoints_and_writes_json(checkpoints, tmp_path, capsys):
    out = tmp_path / "latency.json"
    cli = _load_cli()
    argv = [str(checkpoints["dense"]), str(checkpoints["small"]), "--batch", "1", "--seq", "16"]
    rows = cli.main([*argv, "--repeats", "2", "--warmup", "1", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == json.loads(json.dumps(rows))
    assert saved["setup"]["seq"] == 16 and saved["setup"]["repeats"] == 2
    assert [row["model"] for row in rows] == [str(checkpoints["dense"]), str(checkpoints["small"])]
    for row in rows:
        for key in ("params", "bytes", "nonzero_params", "best_ms", "median_ms", "batch", "seq"):
            assert key in row, key
        assert len(row["times_ms"]) == 2 and 0 < row["best_ms"] <= row["median_ms"]
        assert "speedup_vs_torch" not in row
    assert rows[0]["speedup_vs_first"] == 1.0
    assert rows[1]["params"] < rows[0]["params"] and rows[0]["bytes"] == 4 * rows[0]["params"]
    table = capsys.readouterr().out
    assert "| model | batch |" in table and str(checkpoints["small"]) in table


def test_cli_torch_baseline_from_the_same_checkpoint(checkpoints, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path / "latency.json"
    dense = str(checkpoints["dense"])
    rows = _load_cli().main(
        [dense, "--torch", dense, "--batch", "1", "--seq", "16", "--repeats", "2"]
        + ["--warmup", "1", "--json", str(out)]
    )
    torch_row, jax_row = rows
    assert torch_row["framework"] == "torch" and torch_row["model"] == f"torch:{dense}"
    assert torch_row["speedup_vs_torch"] == 1.0
    assert jax_row["speedup_vs_torch"] == pytest.approx(torch_row["best_ms"] / jax_row["best_ms"])
    # The same weights on both sides (transformers ties nothing in a classifier).
    assert torch_row["params"] == jax_row["params"]
    assert "torch" in json.loads(out.read_text())["setup"]["versions"]


def test_cli_int8_and_bf16_add_a_row_per_checkpoint_with_close_outputs(checkpoints):
    dense = str(checkpoints["dense"])
    argv = [dense, "--int8", "--bf16", "--batch", "2", "--seq", "16", "--repeats", "1"]
    rows = _load_cli().main(argv)
    assert [row["model"] for row in rows] == [dense, f"{dense} int8", f"{dense} bf16"]
    assert rows[1]["params"] == rows[0]["params"] and rows[1]["best_ms"] > 0
    model, params = bench.load_model(dense)
    fp32 = bench.make_forward(model, params, 2, 16)()
    int8_matmuls = Interventions(matmul=INT8_PRODUCTS)
    int8 = bench.make_forward(model, params, 2, 16, interventions=int8_matmuls)()
    assert not np.array_equal(fp32, int8)
    np.testing.assert_allclose(int8, fp32, atol=0.1 * float(jnp.abs(fp32).max()))


@pytest.mark.parametrize("case", ["missing", "no_config", "no_weights"])
def test_cli_says_clearly_when_a_dir_is_not_a_checkpoint(tmp_path, capsys, case):
    directory = tmp_path / "model"
    if case != "missing":
        directory.mkdir()
    if case == "no_weights":
        (directory / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        _load_cli().main([str(directory), "--batch", "1", "--seq", "16"])
    assert exit_info.value.code == 2
    expected = {"missing": "not a directory", "no_config": "no config.json", "no_weights": "no "}
    error = capsys.readouterr().err
    assert str(directory) in error and expected[case] in error
