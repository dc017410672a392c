"""Tokenization: equality with HF's own call, truncation, and the disk cache."""

import numpy as np
import pytest

from bertjax import paths
from bertjax.data import sources
from bertjax.data import tokenizer as tokenization

MODEL_DIR = paths.models_root() / "minilm-l6-h384"
pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "vocab.txt").is_file() or not (paths.data_root() / "glue").is_dir(),
    reason="shared models/data not found",
)


@pytest.fixture(scope="module")
def tokenizer():
    return tokenization.load_tokenizer("minilm-l6-h384")


@pytest.fixture(scope="module")
def mrpc_dev():
    return sources.read_split("mrpc", "dev", limit=40)


def test_load_tokenizer_is_fast_uncased_bert(tokenizer):
    assert tokenizer.is_fast
    assert len(tokenizer) == 30522
    assert tokenizer("Hello World")["input_ids"] == [101, 7592, 2088, 102]
    by_path = tokenization.load_tokenizer(MODEL_DIR)
    assert tokenization.tokenizer_fingerprint(by_path) == tokenization.tokenizer_fingerprint(
        tokenizer
    )


@pytest.mark.parametrize("max_seq_length", [24, 128])
def test_pairs_match_hf_call(tokenizer, mrpc_dev, max_seq_length):
    encoded = tokenization.encode(tokenizer, mrpc_dev, max_seq_length)
    assert len(encoded) == len(mrpc_dev)
    for example, ids, types in zip(
        mrpc_dev, encoded.input_ids, encoded.token_type_ids, strict=True
    ):
        expected = tokenizer(
            example.text_a, example.text_b, truncation=True, max_length=max_seq_length
        )
        assert ids.dtype == np.int32 and types.dtype == np.int32
        assert ids.tolist() == expected["input_ids"]
        assert types.tolist() == expected["token_type_ids"]
    assert encoded.lengths.max() <= max_seq_length
    if max_seq_length == 24:
        assert (encoded.lengths == 24).all()  # every MRPC pair is longer: truncation happened
    assert encoded.labels.dtype == np.int32
    assert encoded.labels.tolist() == [e.label for e in mrpc_dev]


def test_single_sentences_and_special_tokens(tokenizer):
    examples = sources.read_split("sst2", "dev", limit=20)
    encoded = tokenization.encode(tokenizer, examples, 16)
    for example, ids, types in zip(
        examples, encoded.input_ids, encoded.token_type_ids, strict=True
    ):
        assert (
            ids.tolist() == tokenizer(example.text_a, truncation=True, max_length=16)["input_ids"]
        )
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert not types.any()
    assert encoded.max_seq_length == 16 and encoded.pad_token_id == tokenizer.pad_token_id


def test_float_and_missing_labels(tokenizer, tmp_path):
    stsb = sources.read_split("stsb", "dev", limit=5)
    assert tokenization.encode(tokenizer, stsb, 32).labels.dtype == np.float32
    test = tokenization.load_encoded("stsb", "test", tokenizer, 32, limit=3, cache_dir=tmp_path)
    assert test.labels.dtype == np.float32 and np.isnan(test.labels).all()
    rte_test = tokenization.load_encoded("rte", "test", tokenizer, 32, limit=3, cache_dir=tmp_path)
    assert rte_test.labels.tolist() == [-1, -1, -1]
    assert len(tokenization.encode(tokenizer, [], 32)) == 0


def test_rejects_mixed_pairs(tokenizer):
    mixed = [sources.Example("a", "b", 0), sources.Example("a", None, 0)]
    with pytest.raises(ValueError, match="mix"):
        tokenization.encode(tokenizer, mixed, 32)


def test_second_call_reads_cache_without_tokenizing(tokenizer, mrpc_dev, tmp_path, monkeypatch):
    first = tokenization.encode(tokenizer, mrpc_dev, 64, ("mrpc", "dev"), tmp_path)
    assert len(list(tmp_path.glob("mrpc_dev-L64-*.npz"))) == 1

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenizer called despite a cache hit")

    monkeypatch.setattr(type(tokenizer), "__call__", no_tokenizing)
    second = tokenization.encode(tokenizer, mrpc_dev, 64, ("mrpc", "dev"), tmp_path)
    assert len(second) == len(first)
    for a, b in zip(
        first.input_ids + first.token_type_ids,
        second.input_ids + second.token_type_ids,
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
        assert b.dtype == np.int32
    np.testing.assert_array_equal(first.labels, second.labels)
    assert second.max_seq_length == 64 and second.pad_token_id == first.pad_token_id


def test_cache_key_covers_length_data_and_parts(tokenizer, tmp_path):
    header = ["index", "sentence1", "sentence2", "label"]
    rte = tmp_path / "data" / "glue" / "RTE" / "train.tsv"
    rte.parent.mkdir(parents=True)

    def write(second_sentence):
        rows = [header, ["0", "A cat sat.", second_sentence, "entailment"]]
        rte.write_text("".join("\t".join(row) + "\n" for row in rows))

    def key(max_seq_length=32, parts=("rte", "train")):
        examples = sources.read_split("rte", "train", data_dir=tmp_path / "data")
        return tokenization.cache_path(tokenizer, examples, max_seq_length, parts, tmp_path)

    write("A cat.")
    base = key()
    assert key() == base
    assert key(max_seq_length=64) != base
    assert key(parts=("rte", "dev")) != base
    write("A dog.")
    assert key() != base


def test_fingerprint_ignores_truncation_state(tokenizer):
    before = tokenization.tokenizer_fingerprint(tokenizer)
    tokenizer(["a b c"], truncation=True, max_length=7)
    assert tokenization.tokenizer_fingerprint(tokenizer) == before


def test_load_encoded_caches_per_split(tokenizer, tmp_path):
    train = tokenization.load_encoded("rte", "train", tokenizer, 128, limit=50, cache_dir=tmp_path)
    dev = tokenization.load_encoded("rte", "dev", tokenizer, 128, limit=50, cache_dir=tmp_path)
    assert len(train) == len(dev) == 50
    assert len(list(tmp_path.glob("*.npz"))) == 2
