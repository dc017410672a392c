"""Batching: coverage, fixed shapes, bucketing, determinism, resume, padding saved."""

import numpy as np
import pytest

from bertjax import paths
from bertjax.data import pipeline, sources
from bertjax.data import tokenizer as tokenization

BATCH_SIZE = 32


def synthetic(lengths, max_seq_length=128, float_labels=False):
    """An `Encoded` whose token ids encode (example, position) so rows can be traced."""
    input_ids = [np.arange(n, dtype=np.int32) + 1000 * i + 1 for i, n in enumerate(lengths)]
    token_type_ids = [(np.arange(n) >= n // 2).astype(np.int32) for n in lengths]
    labels = np.arange(len(lengths)) % 3
    labels = labels.astype(np.float32) * 0.5 if float_labels else labels.astype(np.int32)
    return tokenization.Encoded(input_ids, token_type_ids, labels, max_seq_length)


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    return synthetic(rng.integers(3, 129, size=203))


@pytest.fixture(scope="module")
def mrpc_train():
    if not (paths.models_root() / "minilm-l6-h384").is_dir():
        pytest.skip("shared models not found")
    tokenizer = tokenization.load_tokenizer("minilm-l6-h384")
    return tokenization.encode(tokenizer, sources.read_split("mrpc", "train"), 128)


def check_batch(encoded, batch, batch_size):
    """Shapes, dtypes, and that each real row is its example's ids followed by padding."""
    width = batch["input_ids"].shape[1]
    assert width in pipeline.bucket_sizes(encoded)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[key].shape == (batch_size, width) and batch[key].dtype == np.int32
    for key in ("labels", "weights", "index"):
        assert batch[key].shape == (batch_size,)
    assert batch["labels"].dtype == encoded.labels.dtype
    assert batch["weights"].dtype == np.float32 and batch["index"].dtype == np.int32
    real = batch["index"] >= 0
    np.testing.assert_array_equal(batch["weights"], real.astype(np.float32))
    lengths = encoded.lengths[batch["index"][real]]
    # The smallest bucket that fits the longest row.
    assert width == min(b for b in pipeline.bucket_sizes(encoded) if b >= lengths.max())
    for row, example in enumerate(batch["index"]):
        if example < 0:
            assert not batch["attention_mask"][row].any() and batch["labels"][row] == 0
            continue
        n = encoded.lengths[example]
        np.testing.assert_array_equal(batch["input_ids"][row, :n], encoded.input_ids[example])
        np.testing.assert_array_equal(
            batch["token_type_ids"][row, :n], encoded.token_type_ids[example]
        )
        assert (batch["input_ids"][row, n:] == encoded.pad_token_id).all()
        assert batch["attention_mask"][row].sum() == n and batch["attention_mask"][row, :n].all()
        assert batch["labels"][row] == encoded.labels[example]


def test_buckets():
    assert pipeline.buckets(128) == (32, 64, 96, 128)
    assert pipeline.buckets(100) == (32, 64, 96, 100)
    assert pipeline.buckets(20) == (20,)
    assert pipeline.padded_length(33, (32, 64)) == 64
    assert pipeline.padded_length(32, (32, 64)) == 32
    with pytest.raises(ValueError, match="longer than the largest bucket"):
        pipeline.padded_length(65, (32, 64))


def test_a_finer_bucket_multiple_pads_less(small):
    coarse = list(pipeline.train_batches(small, BATCH_SIZE, 0, 0))
    fine_split = synthetic(small.lengths)
    fine_split.bucket_multiple = 8
    fine = list(pipeline.train_batches(fine_split, BATCH_SIZE, 0, 0))
    for a, b in zip(coarse, fine, strict=True):  # same rows, each padded to its bucket
        np.testing.assert_array_equal(a["index"], b["index"])
        width = b["input_ids"].shape[1]
        assert width == min(-(-int(small.lengths[b["index"][b["index"] >= 0]].max()) // 8) * 8, 128)
        check_batch(fine_split, b, BATCH_SIZE)
    assert sum(b["input_ids"].size for b in fine) < sum(a["input_ids"].size for a in coarse)


def test_eval_batches_cover_every_example_once(small):
    batches = list(pipeline.eval_batches(small, BATCH_SIZE))
    assert len(batches) == pipeline.num_eval_batches(small, BATCH_SIZE) == 7
    for batch in batches:
        check_batch(small, batch, BATCH_SIZE)
    index = np.concatenate([b["index"] for b in batches])
    assert sorted(index[index >= 0]) == list(range(len(small)))
    assert (index < 0).sum() == 7 * BATCH_SIZE - len(small)
    # Sorted by length, so the padded widths never decrease.
    widths = [b["input_ids"].shape[1] for b in batches]
    assert widths == sorted(widths)


def test_float_labels():
    encoded = synthetic([5, 9, 40], float_labels=True)
    (batch,) = pipeline.eval_batches(encoded, 4)
    check_batch(encoded, batch, 4)
    assert batch["input_ids"].shape == (4, 64)


def test_train_epoch_is_a_permutation(small):
    batches = list(pipeline.train_batches(small, BATCH_SIZE, seed=1, epoch=0))
    assert len(batches) == pipeline.num_train_batches(small, BATCH_SIZE) == 7
    for batch in batches:
        check_batch(small, batch, BATCH_SIZE)
    index = np.concatenate([b["index"] for b in batches])
    assert sorted(index[index >= 0]) == list(range(len(small)))


def order(encoded, seed, epoch, **kwargs):
    return [b.tolist() for b in pipeline.train_batch_indices(encoded, 8, seed, epoch, **kwargs)]


def test_train_order_is_deterministic_per_seed_and_epoch(small):
    assert order(small, 3, 5) == order(small, 3, 5)
    assert order(small, 3, 5) != order(small, 3, 6)
    assert order(small, 3, 5) != order(small, 4, 5)
    first = [b["index"] for b in pipeline.train_batches(small, 8, seed=3, epoch=5)]
    assert [b[b >= 0].tolist() for b in first] == order(small, 3, 5)


def test_train_batches_group_similar_lengths(small):
    # With one chunk holding the whole data set, each batch is a contiguous run
    # of the length-sorted examples: the spread within batches is small.
    spread = [np.ptp(small.lengths[b]) for b in pipeline.train_batch_indices(small, 8, 0, 0)]
    random = [np.ptp(small.lengths[b]) for b in np.array_split(np.arange(200), 25)]
    assert np.mean(spread) < 0.25 * np.mean(random)


def test_start_batch_equals_skipping_without_collating_skipped(small, monkeypatch):
    full = list(pipeline.train_batches(small, 16, seed=7, epoch=2))
    calls = []
    collate = pipeline.collate
    monkeypatch.setattr(pipeline, "collate", lambda *args: calls.append(1) or collate(*args))
    resumed = list(pipeline.train_batches(small, 16, seed=7, epoch=2, start_batch=5))
    assert len(calls) == len(full) - 5 == len(resumed)
    for a, b in zip(full[5:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_empty_split():
    empty = synthetic([])
    assert list(pipeline.eval_batches(empty, 4)) == []
    assert list(pipeline.train_batches(empty, 4, 0, 0)) == []
    assert pipeline.num_train_batches(empty, 4) == 0


def test_padding_reduction_on_mrpc_train(mrpc_train):
    batches = list(pipeline.train_batches(mrpc_train, BATCH_SIZE, seed=0, epoch=0))
    index = np.concatenate([b["index"] for b in batches])
    assert sorted(index[index >= 0]) == list(range(len(mrpc_train)))
    padded = sum(b["input_ids"].size for b in batches)
    to_max = len(batches) * BATCH_SIZE * mrpc_train.max_seq_length
    real = int(mrpc_train.lengths.sum())
    assert sum(int(b["attention_mask"].sum()) for b in batches) == real
    assert padded <= 0.6 * to_max, (padded, to_max)
    # Buckets are 32 wide, so about 3/4 of the padded tokens are real on MRPC.
    assert real / padded > 0.7, real / padded
    assert {b["input_ids"].shape[0] for b in batches} == {BATCH_SIZE}
    assert len({b["input_ids"].shape for b in batches}) <= len(pipeline.buckets(128))
