"""WordPiece tokenization of GLUE examples, with an on-disk cache.

All examples of a split are encoded in one batched call of a fast (Rust)
tokenizer, without padding: `bertjax.data.pipeline` pads per batch. The result
is cached as an .npz file whose name contains a sha256 over everything that
can change the token ids (tokenizer definition, lower-casing, max length, the
example texts and labels), so a stale cache cannot be picked up by mistake.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import transformers

from bertjax import paths
from bertjax.data import sources
from bertjax.data.tasks import Task, get_task

# Bump when the cache layout or the encoding recipe changes.
_CACHE_VERSION = 1


@dataclasses.dataclass
class Encoded:
    """Token ids of one split, ragged (one array per example, no padding).

    Attributes:
      input_ids: int32 arrays `[CLS] a [SEP] (b [SEP])`, each at most
        `max_seq_length` long.
      token_type_ids: int32 arrays of the same lengths (0 for a, 1 for b).
      labels: [N] int32 class indices or float32 scores; -1 / NaN where the
        split has no labels.
      max_seq_length: the truncation length, which also fixes the padding buckets.
      pad_token_id: id used by the pipeline to pad `input_ids`.
      bucket_multiple: batches are padded to a multiple of this (or to
        `max_seq_length`): `pipeline.buckets`. Not part of the cache: the run sets it.
    """

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    labels: np.ndarray
    max_seq_length: int
    pad_token_id: int = 0
    bucket_multiple: int = 32

    def __len__(self) -> int:
        return len(self.input_ids)

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """[N] int32 number of tokens of each example."""
        return np.fromiter((len(ids) for ids in self.input_ids), np.int32, len(self.input_ids))


def load_tokenizer(path_or_name: str | Path) -> transformers.PreTrainedTokenizerBase:
    """Loads a fast tokenizer with `AutoTokenizer.from_pretrained`.

    `path_or_name` is a directory in HF layout, a short name of a directory
    under `paths.models_root()` ('minilm-l6-h384'), or a hub name.
    (`BertTokenizerFast(vocab_file=...)` is not used: in transformers 5.x it
    silently ignores the vocabulary file.)
    """
    local = paths.models_root() / str(path_or_name)
    if not Path(path_or_name).exists() and local.is_dir():
        path_or_name = local
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path_or_name), use_fast=True)
    if not tokenizer.is_fast:
        kind = type(tokenizer).__name__
        raise TypeError(f"{path_or_name}: expected a fast tokenizer, got {kind}")
    return tokenizer


def tokenizer_fingerprint(tokenizer: transformers.PreTrainedTokenizerBase) -> str:
    """sha256 of the tokenizer definition: vocab, normalizer (lower-casing), special tokens.

    The backend's truncation/padding state is left out: it changes whenever
    the tokenizer is called with different arguments.
    """
    definition = json.loads(tokenizer.backend_tokenizer.to_str())
    definition.pop("truncation", None)
    definition.pop("padding", None)
    definition["do_lower_case"] = getattr(tokenizer, "do_lower_case", None)
    blob = json.dumps(definition, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def examples_fingerprint(examples: Sequence[sources.Example]) -> str:
    """sha256 over the texts and labels, i.e. over the parsed data file."""
    digest = hashlib.sha256()
    for field in ("text_a", "text_b", "label"):
        # \x1f (unit separator) does not occur in GLUE text.
        values = "\x1f".join(repr(getattr(example, field)) for example in examples)
        digest.update(values.encode("utf-8"))
        digest.update(b"\x1e")
    return digest.hexdigest()


def _tokenize(
    tokenizer: transformers.PreTrainedTokenizerBase,
    examples: Sequence[sources.Example],
    max_seq_length: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if not examples:
        return [], []
    texts_a = [example.text_a for example in examples]
    is_pair = [example.text_b is not None for example in examples]
    if any(is_pair) and not all(is_pair):
        raise ValueError("examples mix sentence pairs and single sentences")
    texts_b = [example.text_b for example in examples] if all(is_pair) else None
    batch = tokenizer(
        texts_a,
        texts_b,
        truncation="longest_first",
        max_length=max_seq_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=True,
    )
    input_ids = [np.asarray(ids, np.int32) for ids in batch["input_ids"]]
    token_type_ids = [np.asarray(ids, np.int32) for ids in batch["token_type_ids"]]
    return input_ids, token_type_ids


def _labels(examples: Sequence[sources.Example]) -> np.ndarray:
    labels = [example.label for example in examples]
    if any(isinstance(label, float) for label in labels):
        return np.asarray([np.nan if x is None else x for x in labels], np.float32)
    return np.asarray([-1 if x is None else x for x in labels], np.int32)


def _save(path: Path, encoded: Encoded) -> None:
    lengths = encoded.lengths
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    empty = np.zeros(0, np.int32)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a concurrent reader never sees a half-written file.
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
        np.savez(
            f,
            input_ids=np.concatenate(encoded.input_ids) if len(encoded) else empty,
            token_type_ids=np.concatenate(encoded.token_type_ids) if len(encoded) else empty,
            offsets=offsets,
            labels=encoded.labels,
            max_seq_length=np.int64(encoded.max_seq_length),
            pad_token_id=np.int64(encoded.pad_token_id),
        )
    os.replace(f.name, path)


def _load(path: Path) -> Encoded:
    with np.load(path) as data:
        split_at = data["offsets"][1:-1]
        count = len(data["labels"])
        return Encoded(
            input_ids=np.split(data["input_ids"], split_at) if count else [],
            token_type_ids=np.split(data["token_type_ids"], split_at) if count else [],
            labels=data["labels"],
            max_seq_length=int(data["max_seq_length"]),
            pad_token_id=int(data["pad_token_id"]),
        )


def cache_path(
    tokenizer: transformers.PreTrainedTokenizerBase,
    examples: Sequence[sources.Example],
    max_seq_length: int,
    cache_key_parts: Sequence[str] = (),
    cache_dir: str | Path | None = None,
) -> Path:
    """Where `encode` caches these examples: `<cache_dir>/<parts>-L<len>-<sha256[:20]>.npz`."""
    key = {
        "version": _CACHE_VERSION,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "lower_case": getattr(tokenizer, "do_lower_case", None),
        "max_seq_length": max_seq_length,
        "parts": [str(part) for part in cache_key_parts],
        "examples": examples_fingerprint(examples),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9_.]+", "_", "-".join(key["parts"])) or "encoded"
    root = Path(cache_dir) if cache_dir is not None else paths.cache_root() / "encoded"
    return root / f"{stem}-L{max_seq_length}-{digest[:20]}.npz"


def encode(
    tokenizer: transformers.PreTrainedTokenizerBase,
    examples: Sequence[sources.Example],
    max_seq_length: int,
    cache_key_parts: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
) -> Encoded:
    """Tokenizes examples (pairs truncated 'longest_first' to `max_seq_length`).

    Caching is on when `cache_key_parts` (e.g. `('rte', 'train', 'tsv')`, which
    name the file) or `cache_dir` is given; the key always also covers the
    tokenizer, `max_seq_length` and the example contents.
    """
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length must be >= 3, got {max_seq_length}")
    path = None
    if cache_key_parts is not None or cache_dir is not None:
        path = cache_path(tokenizer, examples, max_seq_length, cache_key_parts or (), cache_dir)
        if path.is_file():
            return _load(path)
    input_ids, token_type_ids = _tokenize(tokenizer, examples, max_seq_length)
    encoded = Encoded(
        input_ids=input_ids,
        token_type_ids=token_type_ids,
        labels=_labels(examples),
        max_seq_length=max_seq_length,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
    )
    if path is not None:
        _save(path, encoded)
    return encoded


def load_encoded(
    task: str | Task,
    split: str,
    tokenizer: transformers.PreTrainedTokenizerBase,
    max_seq_length: int,
    data_dir: str | Path | None = None,
    source: str = "tsv",
    limit: int = 0,
    cache_dir: str | Path | None = None,
) -> Encoded:
    """`read_split` followed by a cached `encode`: the one call a training run needs."""
    task = get_task(task)
    examples = sources.read_split(task, split, data_dir=data_dir, source=source, limit=limit)
    parts = (task.name, split, source, f"limit{limit}")
    encoded = encode(tokenizer, examples, max_seq_length, parts, cache_dir)
    if task.is_regression and encoded.labels.dtype != np.float32:
        # An unlabelled regression split (STS-B test) has no floats to infer the dtype from.
        encoded.labels = np.full(len(encoded), np.nan, np.float32)
    return encoded
