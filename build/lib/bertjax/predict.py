"""Predictions of an exported model on raw text, and GLUE submission files.

`Predictor` loads an export in HF layout (a run's `export/`: weights,
`config.json`, tokenizer files), tokenizes exactly as training does
(`bertjax.data.tokenizer.encode`), sorts the texts by length and pads them into
a few fixed shapes: `batch_size` rows (the last batch filled with padding rows)
by one of a few sequence-length `buckets`. Each shape compiles once; after
`warmup()` nothing compiles again, whatever the input.

    predictor = Predictor("runs/sst2/export", task="sst2")
    out = predictor.predict(["a gorgeous film", "dull and overlong"])
    out.labels, out.probabilities  # ['1', '0'], [2, 2]

Command line, writing GLUE's submission format (`index<TAB>prediction`):

    python -m bertjax.predict runs/sst2/export --task sst2             # test split -> SST-2.tsv
    python -m bertjax.predict runs/rte/export --task rte --split dev   # + prints the dev metric
    python -m bertjax.predict DIR --task mrpc --input my.tsv --output out.tsv
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from bertjax import bench, compilation, models
from bertjax.data import pipeline, sources
from bertjax.data import tokenizer as tokenizer_lib
from bertjax.data.tasks import Task, eval_split, get_task
from bertjax.models.interventions import COMPUTE, compute_interventions

Text = str | tuple[str, str]

_DEFAULT_LABEL = re.compile(r"LABEL_\d+")
# Batches in flight before the host waits for one: keeps padding the next batch
# overlapped with the forward of the previous one, and the progress bar honest.
_IN_FLIGHT = 2


@dataclasses.dataclass(frozen=True)
class Predictions:
    """What `Predictor.predict` returns, in input order (N texts, C classes).

    Attributes:
      logits: [N, C] float32 ([N, 1] for regression).
      label_ids: [N] int32 argmax class ids; None for regression.
      labels: [N] label names when the export or the task knows them, else None.
      probabilities: [N, C] float32 softmax of the logits; None for regression.
      scores: [N] float32 regression outputs (STS-B similarity); None for classification.
    """

    logits: np.ndarray
    label_ids: np.ndarray | None = None
    labels: list[str] | None = None
    probabilities: np.ndarray | None = None
    scores: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.logits)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _export_label_names(hf_config: dict, count: int) -> tuple[str, ...] | None:
    """`id2label` in class order, or None when it holds only HF's `LABEL_i` defaults."""
    id2label = {int(k): v for k, v in (hf_config.get("id2label") or {}).items()}
    if sorted(id2label) != list(range(count)):
        return None
    names = tuple(id2label[i] for i in range(count))
    return None if all(_DEFAULT_LABEL.fullmatch(name) for name in names) else names


class Predictor:
    """Batched, fixed-shape jitted inference of an exported classifier or regressor.

    Args:
      export_dir: a directory in HF layout with a sequence head
        (`BertForSequenceClassification`), or a name under `$BERTJAX_MODELS`.
      task: the GLUE task (name or `Task`) the model was trained on; it checks
        the head and the input kind and names the labels when the export does not.
      max_seq_length: truncation length of the tokenizer, as in training.
      batch_size: rows of every forward; a partial batch is filled with padding rows.
      buckets: the padded sequence lengths (ascending; the last >= `max_seq_length`);
        default `pipeline.buckets(max_seq_length)`, i.e. 32, 64, ..., max_seq_length.
      compute: "fp32" (float32 matmuls; an int8 export's kernels run int8 x int8) or
        "bf16" (bfloat16 matmuls with float32 accumulation; int8 kernels weight-only),
        `interventions.COMPUTE`. bf16 is ~1.6x faster at batch 32 on AVX-512 BF16 CPUs
        (benchmarks/results/runtime.md) at a relative output error of ~1e-3.
    """

    def __init__(
        self,
        export_dir: str | Path,
        *,
        task: str | Task | None = None,
        max_seq_length: int = 128,
        batch_size: int = 32,
        buckets: Sequence[int] | None = None,
        compute: str = "fp32",
    ):
        compilation.enable()  # its buckets load from disk after the first Predictor
        self.directory = bench.checkpoint_dir(export_dir)
        self.task = get_task(task) if task is not None else None
        self.compute = compute
        self.interventions = compute_interventions(compute)
        # Everything config.json can refute is checked before the weights load.
        hf_config = json.loads((self.directory / "config.json").read_text())
        head = bench.checkpoint_head(self.directory)
        if head is None:
            raise ValueError(
                f"{self.directory}: no classification or regression head "
                "(config.json architectures lack BertForSequenceClassification)"
            )
        self.is_regression = head == "regression"
        if self.task is not None and self.task.is_regression != self.is_regression:
            raise ValueError(f"{self.directory}: a {head} head cannot predict {self.task.name}")
        classes = len(hf_config.get("id2label") or {}) or 2
        self.num_labels = 1 if self.is_regression else int(hf_config.get("num_labels", classes))
        self.label_names = None if self.is_regression else self._label_names(hf_config)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        limit = int(hf_config.get("max_position_embeddings", 512))
        if not 3 <= max_seq_length <= limit:
            raise ValueError(f"max_seq_length must be in [3, {limit}], got {max_seq_length}")
        buckets = tuple(int(b) for b in (buckets or pipeline.buckets(max_seq_length)))
        if list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
            raise ValueError(f"buckets must be positive and strictly ascending, got {buckets}")
        if not max_seq_length <= buckets[-1] <= limit:
            raise ValueError(
                f"the largest bucket must be in [max_seq_length={max_seq_length}, {limit}], "
                f"got {buckets[-1]}"
            )
        self.max_seq_length, self.batch_size, self.buckets = max_seq_length, batch_size, buckets
        self.tokenizer = tokenizer_lib.load_tokenizer(self.directory)
        self.pad_token_id = self.tokenizer.pad_token_id or 0
        num_labels = None if self.is_regression else self.num_labels
        self.model, params = models.load_pretrained(
            self.directory, head=head, num_labels=num_labels
        )
        self.params = jax.device_put(params)
        self._traces = 0
        self._jitted_forward = jax.jit(self._forward)

    def _label_names(self, hf_config: dict) -> tuple[str, ...] | None:
        """Class names: the task's, checked against the export's, else the export's own."""
        names = _export_label_names(hf_config, self.num_labels)
        if self.task is None:
            return names
        if len(self.task.labels) != self.num_labels:
            raise ValueError(
                f"{self.directory}: {self.num_labels} classes, but {self.task.name} has "
                f"{len(self.task.labels)} ({', '.join(self.task.labels)})"
            )
        if names is not None and names != self.task.labels:
            raise ValueError(
                f"{self.directory}: labels {list(names)} are not {self.task.name}'s labels "
                f"{list(self.task.labels)}"
            )
        return self.task.labels

    def _forward(self, params, input_ids, attention_mask, token_type_ids) -> jax.Array:
        """Logits [B, C] float32 of one padded batch of [B, T] int32 inputs.

        The one place the model runs (jitted): its body executes once per new
        input shape, which `compilations` counts.
        """
        self._traces += 1
        outputs, _ = self.model.apply(
            {"params": params},
            input_ids,
            attention_mask,
            token_type_ids,
            interventions=self.interventions,
        )
        return outputs["logits"].astype(jnp.float32)

    @property
    def compilations(self) -> int:
        """How many times the forward was traced (one per distinct batch shape so far)."""
        return self._traces

    def warmup(self) -> Predictor:
        """Compiles the forward for every bucket, so that no later call compiles."""
        for width in self.buckets:
            ids = np.full((self.batch_size, width), self.pad_token_id, np.int32)
            zeros = np.zeros((self.batch_size, width), np.int32)
            jax.block_until_ready(self._jitted_forward(self.params, ids, zeros, zeros))
        return self

    def encode(self, texts: Sequence[Text]) -> tokenizer_lib.Encoded:
        """Token ids of `texts` (strings, or (a, b) pairs), as the training pipeline makes them."""
        return tokenizer_lib.encode(self.tokenizer, self._examples(texts), self.max_seq_length)

    def _examples(self, texts: Sequence[Text]) -> list[sources.Example]:
        if isinstance(texts, str):
            raise TypeError("predict() takes a list of texts, not a single string")
        examples = []
        for position, text in enumerate(texts):
            if isinstance(text, str):
                examples.append(sources.Example(text, None, None))
            elif (
                isinstance(text, (tuple, list))
                and len(text) == 2
                and all(isinstance(part, str) for part in text)
            ):
                examples.append(sources.Example(text[0], text[1], None))
            else:
                raise TypeError(f"text {position}: expected a string or a pair of strings")
        return examples

    def predict(self, texts: Sequence[Text], *, progress: bool = False) -> Predictions:
        """Predictions for a list of strings or a list of (a, b) pairs, in input order."""
        return self.predict_examples(self._examples(texts), progress=progress)

    def predict_examples(
        self, examples: Sequence[sources.Example], *, progress: bool = False
    ) -> Predictions:
        """`predict` of `sources.Example`s (their labels are ignored)."""
        if examples and self.task is not None:
            pair = examples[0].text_b is not None
            if pair != self.task.is_pair:
                kind = "sentence pairs" if self.task.is_pair else "single sentences"
                raise ValueError(f"{self.task.name} takes {kind}")
        encoded = tokenizer_lib.encode(self.tokenizer, examples, self.max_seq_length)
        return self._predictions(self.logits(encoded, progress=progress))

    def logits(self, encoded: tokenizer_lib.Encoded, *, progress: bool = False) -> np.ndarray:
        """Logits [N, C] float32 of every example of `encoded`, in example order."""
        logits = np.zeros((len(encoded), self.num_labels), np.float32)
        order = np.argsort(encoded.lengths, kind="stable")
        starts = range(0, len(order), self.batch_size)
        pending = collections.deque()
        for start in tqdm.tqdm(starts, desc="predict", unit="batch", disable=not progress):
            indices = order[start : start + self.batch_size]
            batch = self._pad(encoded, indices)
            pending.append((indices, self._jitted_forward(self.params, *batch)))
            if len(pending) > _IN_FLIGHT:
                self._scatter(logits, *pending.popleft())
        while pending:
            self._scatter(logits, *pending.popleft())
        return logits

    @staticmethod
    def _scatter(logits: np.ndarray, indices: np.ndarray, out: jax.Array) -> None:
        logits[indices] = np.asarray(out)[: len(indices)]

    def _pad(
        self, encoded: tokenizer_lib.Encoded, indices: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input_ids, attention_mask, token_type_ids) [batch_size, bucket] int32."""
        lengths = encoded.lengths[indices]
        width = pipeline.padded_length(int(lengths.max()), self.buckets)
        shape = (self.batch_size, width)
        input_ids = np.full(shape, self.pad_token_id, np.int32)
        attention_mask = np.zeros(shape, np.int32)
        token_type_ids = np.zeros(shape, np.int32)
        for row, (example, length) in enumerate(zip(indices, lengths, strict=True)):
            input_ids[row, :length] = encoded.input_ids[example]
            token_type_ids[row, :length] = encoded.token_type_ids[example]
            attention_mask[row, :length] = 1
        return input_ids, attention_mask, token_type_ids

    def _predictions(self, logits: np.ndarray) -> Predictions:
        if self.is_regression:
            return Predictions(logits=logits, scores=logits[:, 0].copy())
        label_ids = logits.argmax(-1).astype(np.int32)
        names = self.label_names
        return Predictions(
            logits=logits,
            label_ids=label_ids,
            labels=None if names is None else [names[i] for i in label_ids],
            probabilities=_softmax(logits),
        )


# --- command line -----------------------------------------------------------------------


def resolve_split(task: Task, split: str) -> str:
    """A split of `task`: its own name, or 'test' / 'dev' for the first test / dev split."""
    if split in task.splits:
        return split
    if split == "dev":
        return eval_split(task)
    if split == "test":
        return next(name for name in task.splits if name.startswith("test"))
    raise ValueError(f"unknown split {split!r} for {task.name}; known: {', '.join(task.splits)}")


def submission_name(task: Task, split: str) -> str:
    """GLUE's file name for a task's predictions: 'SST-2.tsv', 'MNLI-mm.tsv', ...

    Splits other than a test split get the split in the name ('RTE.dev.tsv').
    """
    stem = task.dir_name
    if task.name == "mnli":
        stem = "MNLI-mm" if split.endswith("mismatched") else "MNLI-m"
    return f"{stem}.tsv" if split.startswith("test") else f"{stem}.{split}.tsv"


def submission_rows(task: Task, predictions: Predictions) -> list[str]:
    """The prediction column in GLUE's format: label strings, or STS-B scores."""
    if task.is_regression:
        return [f"{score:.3f}" for score in predictions.scores]
    return list(predictions.labels)


def write_submission(path: str | Path, rows: Sequence[str]) -> Path:
    """Writes `index<TAB>prediction` lines after that header, index 0..N-1."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["index\tprediction", *(f"{i}\t{row}" for i, row in enumerate(rows))]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(args: argparse.Namespace) -> dict:
    """Reads the split, predicts, writes the submission file; returns what it did."""
    task = get_task(args.task)
    split = resolve_split(task, args.split)
    bench.checkpoint_dir(args.export_dir)  # a wrong directory is reported before the data
    if args.input:
        examples = sources.read_tsv(task, split, args.input)
    else:
        examples = sources.read_split(task, split, data_dir=args.data_dir)
    if not examples:
        raise ValueError(f"{args.input or split}: no examples")
    predictor = Predictor(
        args.export_dir,
        task=task,
        max_seq_length=args.max_seq_length,
        batch_size=args.batch_size,
        compute=args.compute,
    )
    show_progress = len(examples) > 20 * args.batch_size
    predictions = predictor.predict_examples(examples, progress=show_progress)
    output = write_submission(
        args.output or submission_name(task, split), submission_rows(task, predictions)
    )
    result = {"split": split, "examples": len(examples), "output": str(output)}
    print(f"wrote {len(examples)} predictions to {output}")
    if not split.startswith("test"):
        from bertjax.train import metrics as metrics_lib

        labels = np.asarray([example.label for example in examples])
        values = predictions.scores if task.is_regression else predictions.label_ids
        result["metrics"] = metrics_lib.compute_metrics(task, values, labels)
        print(f"{split}: " + " ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items()))
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bertjax.predict",
        description="Predict a GLUE split with an exported model; write GLUE's submission TSV.",
    )
    parser.add_argument("export_dir", metavar="EXPORT_DIR", help="HF-layout export (run/export)")
    parser.add_argument("--task", required=True, help="GLUE task the model was trained on")
    parser.add_argument(
        "--split", default="test", help="test (default), dev, or a split name (dev_mismatched)"
    )
    parser.add_argument("--input", type=Path, help="a TSV in the split's GLUE layout")
    parser.add_argument("--output", type=Path, help="default: GLUE's name, e.g. ./SST-2.tsv")
    parser.add_argument("--data-dir", type=Path, help="data root (default $BERTJAX_DATA)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument(
        "--compute",
        choices=tuple(COMPUTE),
        default="fp32",
        help="matmul arithmetic: fp32, or bf16 (float32 accumulation; ~1.6x faster on "
        "AVX-512 BF16 CPUs)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; a bad directory, task, split or file is one error line, exit 2."""
    args = parse_args(argv)
    try:
        run(args)
    except (ValueError, KeyError, OSError) as err:
        print(f"bertjax: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
