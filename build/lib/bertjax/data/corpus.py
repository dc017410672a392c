"""Unlabeled text for task-agnostic (general) distillation, in fixed-length chunks.

A corpus is a plain-text file (optionally gzipped; WikiText-2 raw:
`$BERTJAX_DATA/wikitext-2/{train,valid,test}.raw.gz`). Its lines are tokenized
without special tokens, concatenated into one stream of WordPiece ids, and cut
into chunks of `seq_len - 2` ids, each written as `[CLS] ids [SEP]`: every chunk
is exactly `seq_len` long, so batches need no padding and a jitted step compiles
once. The id stream is cached as .npz keyed by the tokenizer and the file's
contents (as `tokenizer.encode` caches GLUE splits); chunking is cheap and done on load.

Batches are dicts of numpy arrays, as `pipeline` makes them: `input_ids`,
`attention_mask` (all ones), `token_type_ids` (zeros) [B, T] int32 and `weights` [B]
float32 (ones). The last partial batch of an epoch is dropped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import transformers

from bertjax import paths
from bertjax.data.tokenizer import tokenizer_fingerprint

_CACHE_VERSION = 1
CORPORA = {"wikitext-2": "wikitext-2/{split}.raw.gz"}
SPLITS = ("train", "valid", "test")


def corpus_path(corpus: str, split: str, data_dir: str | Path | None = None) -> Path:
    """The file of a named corpus split (`CORPORA`), or `corpus` itself when it is a file."""
    if Path(corpus).is_file():
        return Path(corpus)
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}: a file, or one of {sorted(CORPORA)}")
    if split not in SPLITS:
        raise ValueError(f"unknown corpus split {split!r}; known: {SPLITS}")
    root = Path(data_dir) if data_dir else paths.data_root()
    path = root / CORPORA[corpus].format(split=split)
    if not path.is_file():
        raise FileNotFoundError(f"corpus {corpus} {split}: {path} does not exist")
    return path


def read_lines(path: str | Path) -> list[str]:
    """The non-blank lines of a text file (gunzipped when it ends in .gz), stripped."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def chunk_ids(stream: np.ndarray, seq_len: int, cls_id: int, sep_id: int) -> np.ndarray:
    """[N, seq_len] int32: `[CLS] stream[k*(seq_len-2) : (k+1)*(seq_len-2)] [SEP]` for every
    full piece of the id stream (a shorter tail is dropped)."""
    if seq_len < 3:
        raise ValueError(f"seq_len must be >= 3, got {seq_len}")
    body = seq_len - 2
    count = len(stream) // body
    pieces = np.asarray(stream[: count * body], np.int32).reshape(count, body)
    cls = np.full((count, 1), cls_id, np.int32)
    sep = np.full((count, 1), sep_id, np.int32)
    return np.concatenate([cls, pieces, sep], axis=1)


def _cache_file(tokenizer, path: Path) -> Path:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    key = {"version": _CACHE_VERSION, "tokenizer": tokenizer_fingerprint(tokenizer), "file": digest}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return paths.cache_root() / "corpus" / f"{path.name.split('.')[0]}-{name}.npz"


def load_stream(tokenizer: transformers.PreTrainedTokenizerBase, path: str | Path) -> np.ndarray:
    """The file's WordPiece ids, one stream [N] int32 (cached per tokenizer and contents)."""
    path = Path(path)
    cache = _cache_file(tokenizer, path)
    if cache.is_file():
        with np.load(cache) as data:
            return data["ids"]
    encoded = tokenizer(read_lines(path), add_special_tokens=False, verbose=False)["input_ids"]
    stream = np.fromiter((i for ids in encoded for i in ids), np.int32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache.parent, suffix=".tmp", delete=False) as f:
        np.savez(f, ids=stream)
    os.replace(f.name, cache)
    return stream


def load_chunks(
    tokenizer: transformers.PreTrainedTokenizerBase,
    corpus: str,
    split: str,
    seq_len: int,
    *,
    limit: int = 0,
    data_dir: str | Path | None = None,
) -> np.ndarray:
    """[N, seq_len] int32 chunks of a corpus split; `limit` > 0 keeps the first N."""
    stream = load_stream(tokenizer, corpus_path(corpus, split, data_dir))
    chunks = chunk_ids(stream, seq_len, tokenizer.cls_token_id, tokenizer.sep_token_id)
    return chunks[:limit] if limit else chunks


def as_batch(ids: np.ndarray) -> dict[str, np.ndarray]:
    """The batch dict of [B, T] chunk ids (every token real)."""
    ids = np.asarray(ids, np.int32)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
        "weights": np.ones(len(ids), np.float32),
    }


def num_batches(chunks: np.ndarray, batch_size: int) -> int:
    """Full batches per epoch (the partial last one is dropped)."""
    return len(chunks) // batch_size


def train_batches(
    chunks: np.ndarray, batch_size: int, seed: int, epoch: int, start_batch: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """The epoch's batches, shuffled by (seed, epoch), from batch `start_batch` on (resume)."""
    order = np.random.default_rng([seed, epoch]).permutation(len(chunks))
    for b in range(start_batch, num_batches(chunks, batch_size)):
        yield as_batch(chunks[order[b * batch_size : (b + 1) * batch_size]])


def eval_batches(chunks: np.ndarray, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Every full batch, in order."""
    for b in range(num_batches(chunks, batch_size)):
        yield as_batch(chunks[b * batch_size : (b + 1) * batch_size])
