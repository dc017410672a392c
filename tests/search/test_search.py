"""AutoTinyBERT after the supernet: latency predictor, evolutionary search, extraction."""

import itertools
import json

import numpy as np
import pytest

from bertjax.models import build, load_pretrained, save_pretrained
from bertjax.models.config import BertConfig
from bertjax.models.submodel import Arch
from bertjax.search import __main__ as cli
from bertjax.search import evolution
from bertjax.search.latency import Predictor, features, measure
from bertjax.search.space import Space

SPACE = Space(layers=(1, 2, 3), hidden=(16, 24, 32), heads=(1, 2, 4), ffn=(16, 32, 48))
CONFIG = BertConfig(
    vocab_size=64,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=32,
)


def test_predictor_fit_and_json_round_trip():
    rng = np.random.default_rng(0)
    archs = [SPACE.sample(rng) for _ in range(20)]
    truth = {1: rng.uniform(0, 1, 3), 32: rng.uniform(0, 10, 3)}
    ms = [{b: float(c @ features(a, 8, 16)) for b, c in truth.items()} for a in archs]
    predictor = Predictor.fit(archs, ms, head_dim=8, seq_len=16)
    for arch, measured in zip(archs, ms, strict=True):
        assert predictor.predict(arch, 32) == pytest.approx(measured[32], rel=1e-6)
    loaded = Predictor.from_json(predictor.to_json())
    assert loaded == predictor
    assert loaded.errors(archs, ms)[1]["max_rel_error"] < 1e-6
    with pytest.raises(ValueError, match="no fit for batch 8"):
        loaded.predict(archs[0], 8)


def test_measure_times_the_extracted_sub_model():
    _, params = build(CONFIG)
    ms = measure(params, CONFIG, Arch(1, 16, 2, 16), batch_sizes=(1, 2), seq_len=8, repeats=2)
    assert set(ms) == {1, 2} and all(v > 0 for v in ms.values())


def test_evolution_finds_the_fittest_inside_the_window():
    latency = lambda a: a.layers * a.hidden  # noqa: E731
    fitness = lambda a: a.heads + a.ffn / 100 - abs(a.hidden - 24)  # noqa: E731
    result = evolution.evolve(
        SPACE, fitness, latency, (40, 50), population=8, generations=5, parents=3, seed=1
    )
    assert all(40 <= latency(a) <= 50 for a in result.scores)
    every = itertools.product(SPACE.layers, SPACE.hidden, SPACE.heads, SPACE.ffn)
    inside = [a for a in (Arch(*values) for values in every) if 40 <= latency(a) <= 50]
    assert result.best_fitness == max(fitness(a) for a in inside)
    assert result.best == Arch(2, 24, 4, 48)
    with pytest.raises(ValueError, match="no architecture"):
        evolution.evolve(SPACE, fitness, latency, (1, 2))


def test_extract_cli_writes_a_loadable_sub_model(tmp_path, capsys):
    model, params = build(CONFIG)
    save_pretrained(model, params, tmp_path / "supernet" / "export")
    cli.main(["extract", "--supernet", str(tmp_path / "supernet"), "--arch", "2,16,4,32",
              "--out", str(tmp_path / "sub")])  # fmt: skip
    assert json.loads(capsys.readouterr().out)["export"] == str(tmp_path / "sub")
    sub, sub_params = load_pretrained(tmp_path / "sub")
    assert (sub.config.num_hidden_layers, sub.config.hidden_size) == (2, 16)
    assert (sub.config.num_attention_heads, sub.config.head_dim) == (4, 8)
    kernel = sub_params["bert"]["encoder"]["layer"]["1"]["attention"]["self"]["query"]["kernel"]
    full = params["bert"]["encoder"]["layer"]["1"]["attention"]["self"]["query"]["kernel"]
    np.testing.assert_array_equal(kernel, np.asarray(full)[:16, :32])
