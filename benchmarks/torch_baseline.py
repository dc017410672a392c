"""PyTorch side of the side-by-side benchmarks against bertjax.

What a plain `transformers` + `torch` user would run on the same CPU, so
that bertjax's speed and accuracy can be compared with it:

- `train_step_throughput`: tokens/s of forward + backward + AdamW step on a
  full fixed-length random batch (no data pipeline, no padding effects);
- `finetune`: a plain GLUE fine-tuning loop (shuffled, dynamic padding to
  each batch's longest row, no length bucketing), then dev-set evaluation
  with the official metrics from `bertjax.train.metrics`;
- `matmul_peak_flops`: fp32 matmul FLOP/s, the roofline both sides share.

Everything runs in fp32 with `torch.set_num_threads(os.cpu_count())`.
Run as a script: `python benchmarks/torch_baseline.py --what finetune --task rte`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

# Loading a HF checkpoint without a classifier always leaves these freshly
# initialised; the pooler is absent from minilm-l3-h384. Anything else
# missing means the encoder weights did not load.
EXPECTED_MISSING_PREFIXES = ("classifier.", "bert.pooler.")


def _use_all_cores() -> int:
    """Sets torch's intra-op threads to every core; returns the count."""
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def load_torch_classifier(
    model_dir: str | Path, num_labels: int
) -> transformers.BertForSequenceClassification:
    """Loads a local HF BERT directory as an fp32 BertForSequenceClassification.

    The shared checkpoints hold `BertModel` tensors without the `bert.`
    prefix and without a classifier; transformers maps them onto `bert.*`.
    Raises RuntimeError if anything but the classifier (and a missing pooler)
    was left uninitialised, or if the checkpoint had tensors the model did
    not use. `num_labels=1` gives a regression head (MSE loss). The model is
    returned in train mode; call `.eval()` for inference.
    """
    _use_all_cores()
    model, info = transformers.BertForSequenceClassification.from_pretrained(
        str(model_dir), num_labels=num_labels, dtype=torch.float32, output_loading_info=True
    )
    missing = [key for key in info["missing_keys"] if not key.startswith(EXPECTED_MISSING_PREFIXES)]
    unexpected = [key for key in info["unexpected_keys"] if not key.endswith("position_ids")]
    if missing or unexpected or info.get("mismatched_keys"):
        raise RuntimeError(
            f"{model_dir}: encoder weights did not load cleanly: missing={sorted(missing)[:5]}, "
            f"unexpected={sorted(unexpected)[:5]}, mismatched={info.get('mismatched_keys')}"
        )
    model.train()
    return model


def make_train_step(
    model_dir: str | Path, batch_size: int = 32, seq_len: int = 128
) -> Callable[[], float]:
    """A closure running one forward + backward + AdamW(lr 1e-4) step on a fixed
    random [B, T] batch (attention mask all ones); it returns the loss."""
    _use_all_cores()
    torch.manual_seed(0)
    model = load_torch_classifier(model_dir, num_labels=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    input_ids = torch.randint(1000, model.config.vocab_size, (batch_size, seq_len))
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": torch.zeros_like(input_ids),
        "labels": torch.randint(0, 2, (batch_size,)),
    }

    def step() -> float:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def train_step_throughput(
    model_dir: str | Path,
    batch_size: int = 32,
    seq_len: int = 128,
    steps: int = 10,
    warmup: int = 3,
) -> dict[str, float]:
    """Times `make_train_step` steps; the first `warmup` are not timed.

    Returns seconds per step (best and median over `steps`) and the tokens/s
    they give (`tokens_per_second` uses the median).
    """
    threads = _use_all_cores()
    step = make_train_step(model_dir, batch_size, seq_len)
    times = []
    for index in range(warmup + steps):
        start = time.perf_counter()
        step()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    tokens = batch_size * seq_len
    best, median = min(times), statistics.median(times)
    return {
        "tokens_per_second": tokens / median,
        "tokens_per_second_best": tokens / best,
        "seconds_per_step_best": best,
        "seconds_per_step_median": median,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "steps": steps,
        "threads": threads,
    }


def _tokenize(
    tokenizer: Any, examples: list[Any], max_seq_length: int
) -> list[dict[str, list[int]]]:
    """Unpadded input_ids / token_type_ids per example, [CLS] a [SEP] (b [SEP])."""
    texts_a = [example.text_a for example in examples]
    texts_b = [example.text_b for example in examples]
    encoded = tokenizer(
        texts_a,
        texts_b if any(text is not None for text in texts_b) else None,
        truncation="longest_first",
        max_length=max_seq_length,
    )
    return [
        {"input_ids": ids, "token_type_ids": types}
        for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"], strict=True)
    ]


def _collate(
    rows: list[dict[str, list[int]]], labels: list[Any], regression: bool
) -> dict[str, torch.Tensor]:
    """Pads a batch to its longest row (pad id 0) into [B, T] tensors."""
    length = max(len(row["input_ids"]) for row in rows)
    input_ids = np.zeros((len(rows), length), dtype=np.int64)
    token_type_ids = np.zeros_like(input_ids)
    attention_mask = np.zeros_like(input_ids)
    for index, row in enumerate(rows):
        size = len(row["input_ids"])
        input_ids[index, :size] = row["input_ids"]
        token_type_ids[index, :size] = row["token_type_ids"]
        attention_mask[index, :size] = 1
    return {
        "input_ids": torch.from_numpy(input_ids),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "labels": torch.tensor(labels, dtype=torch.float32 if regression else torch.int64),
    }


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.01) -> torch.optim.AdamW:
    """AdamW with weight decay on every weight except biases and LayerNorm."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        skip = name.endswith("bias") or "LayerNorm" in name
        (no_decay if skip else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def _linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: 0 -> 1 over warmup_steps, then linearly 1 -> 0 at total_steps."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


@torch.inference_mode()
def _predict(
    model: torch.nn.Module,
    encoded: list[dict],
    labels: list[Any],
    batch_size: int,
    regression: bool,
) -> np.ndarray:
    """Dev predictions in input order: argmax class ids, or scores for regression."""
    model.eval()
    predictions = []
    for start in range(0, len(encoded), batch_size):
        batch = _collate(
            encoded[start : start + batch_size], labels[start : start + batch_size], regression
        )
        batch.pop("labels")
        logits = model(**batch).logits
        predictions.append(logits[:, 0] if regression else logits.argmax(dim=-1))
    return torch.cat(predictions).numpy()


def finetune(
    task: str,
    model_dir: str | Path,
    data_dir: str | Path | None = None,
    num_epochs: int = 3,
    batch_size: int = 32,
    lr: float = 1e-4,
    warmup_ratio: float = 0.1,
    max_seq_length: int = 128,
    seed: int = 0,
    train_limit: int = 0,
    eval_limit: int = 0,
) -> dict[str, Any]:
    """Fine-tunes on a GLUE task's train split with a plain PyTorch loop, then evaluates.

    Batches are drawn in a fresh random order each epoch (seeded by `seed`),
    each padded to its own longest row; the last batch may be smaller.
    AdamW (weight decay 0.01 except biases/LayerNorm), linear warmup over
    `warmup_ratio` of the steps then linear decay to 0, gradient clipping at
    norm 1.0. `train_seconds` covers the training loop only (tokenization
    and model loading are excluded, as on the bertjax side). Returns
    train_seconds, examples_per_second, eval_seconds, the official dev
    `metrics`, and the sizes used.
    """
    from bertjax.data.sources import read_split
    from bertjax.data.tasks import eval_split, get_task, num_labels
    from bertjax.train.metrics import compute_metrics

    _use_all_cores()
    torch.manual_seed(seed)
    spec = get_task(task)
    regression = spec.is_regression
    train = read_split(spec, "train", data_dir=data_dir, limit=train_limit)
    dev = read_split(spec, eval_split(spec), data_dir=data_dir, limit=eval_limit)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    train_encoded = _tokenize(tokenizer, train, max_seq_length)
    dev_encoded = _tokenize(tokenizer, dev, max_seq_length)
    train_labels = [example.label for example in train]
    dev_labels = [example.label for example in dev]

    model = load_torch_classifier(model_dir, num_labels(spec))
    optimizer = _optimizer(model, lr)
    steps_per_epoch = -(-len(train) // batch_size)
    total_steps = steps_per_epoch * num_epochs
    warmup_steps = int(warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _linear_warmup_decay(step, warmup_steps, total_steps)
    )

    model.train()
    losses = []
    start = time.perf_counter()
    for epoch in range(num_epochs):
        order = np.random.default_rng((seed, epoch)).permutation(len(train))
        for begin in range(0, len(order), batch_size):
            indices = order[begin : begin + batch_size]
            batch = _collate(
                [train_encoded[i] for i in indices], [train_labels[i] for i in indices], regression
            )
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    predictions = _predict(model, dev_encoded, dev_labels, batch_size, regression)
    eval_seconds = time.perf_counter() - start
    metrics = compute_metrics(spec, predictions, np.asarray(dev_labels))
    return {
        "task": spec.name,
        "train_seconds": train_seconds,
        "examples_per_second": len(train) * num_epochs / train_seconds,
        "eval_seconds": eval_seconds,
        "metrics": {name: float(value) for name, value in metrics.items()},
        "final_loss": float(np.mean(losses[-10:])) if losses else float("nan"),
        "train_examples": len(train),
        "eval_examples": len(dev),
        "steps": total_steps,
        "threads": torch.get_num_threads(),
    }


def matmul_peak_flops(n: int = 1024, repeats: int = 5) -> float:
    """Best fp32 FLOP/s of an [n, n] @ [n, n] torch matmul (2 n^3 FLOPs) over repeats."""
    _use_all_cores()
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator)
    b = torch.randn(n, n, generator=generator)
    torch.mm(a, b)  # warm up the BLAS threads and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _default_model_dir() -> Path:
    """`$BERTJAX_MODELS/minilm-l6-h384` (default: ../shared/models next to the repo)."""
    from bertjax.paths import models_root

    return models_root() / "minilm-l6-h384"


def _print_table(results: dict[str, Any]) -> None:
    """Prints one 'key  value' line per result, floats to 4 significant digits."""
    width = max(len(key) for key in results)
    for key, value in results.items():
        if isinstance(value, dict):
            value = ", ".join(f"{name}={item:.4f}" for name, item in value.items())
        elif isinstance(value, float):
            value = f"{value:.4g}"
        print(f"{key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> None:
    """Parses flags and runs one benchmark."""
    parser = argparse.ArgumentParser(description="PyTorch baseline benchmarks for bertjax")
    parser.add_argument("--what", choices=("throughput", "finetune", "peak"), default="throughput")
    parser.add_argument("--model-dir", type=Path, default=None, help="HF model dir")
    parser.add_argument("--task", default="rte")
    parser.add_argument("--data-dir", default=None, help="GLUE root (default $BERTJAX_DATA)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128, help="throughput: tokens per row")
    parser.add_argument("--steps", type=int, default=10, help="throughput: timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="throughput: untimed steps")
    parser.add_argument("--num-epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-limit", type=int, default=0, help="0: all examples")
    parser.add_argument("--eval-limit", type=int, default=0, help="0: all examples")
    parser.add_argument("--n", type=int, default=1024, help="peak: matrix size")
    args = parser.parse_args(argv)
    # The checkpoint check in load_torch_classifier replaces transformers' load report.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    model_dir = args.model_dir or _default_model_dir()
    if args.what == "peak":
        flops = matmul_peak_flops(args.n)
        results = {"n": args.n, "threads": torch.get_num_threads(), "gflops": flops / 1e9}
    elif args.what == "throughput":
        results = train_step_throughput(
            model_dir, args.batch_size, args.seq_len, steps=args.steps, warmup=args.warmup
        )
    else:
        results = finetune(
            args.task,
            model_dir,
            data_dir=args.data_dir,
            num_epochs=args.num_epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            max_seq_length=args.max_seq_length,
            seed=args.seed,
            train_limit=args.train_limit,
            eval_limit=args.eval_limit,
        )
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, model {model_dir}")
    _print_table(results)


if __name__ == "__main__":
    # Run from a checkout without installing: make `bertjax` importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
