"""Throughput of `bertjax.Predictor` beside a plain PyTorch loop, on a GLUE split, same run.

Both sides start from the raw strings of the split (SST-2 dev: 872 sentences) and
return logits for all of them, tokenization included:
- bertjax: `Predictor(EXPORT_DIR).predict(texts)`: sorted by length, padded to
  buckets of 32 tokens up to `--max-seq-length`, fixed batch `--batch` (padding
  rows in the last batch), jitted fp32 forward, warmed up first (every bucket
  compiled; the trace counter is checked to stay unchanged while timing);
- PyTorch: transformers `BertForSequenceClassification` of the same export under
  `torch.inference_mode`, `torch.set_num_threads(--threads)`, batches of `--batch`
  in input order, each padded to its longest row (`longest`) and/or to
  `--max-seq-length` (`max_length`); see `--torch-padding`.
Candidates are timed a whole pass at a time, round-robin (`bertjax.bench.interleave`),
one warm-up pass each; best and median of `--repeats` passes are reported, and
sentences/s from the best pass. The load average is printed before and after: on a
shared machine the absolute numbers move, the ratio much less.

  python benchmarks/predict_speed.py runs/sst2/export --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bertjax import bench  # noqa: E402
from bertjax.data import pipeline, sources  # noqa: E402
from bertjax.data.tasks import eval_split, get_task  # noqa: E402
from bertjax.models.interventions import COMPUTE  # noqa: E402
from bertjax.predict import Predictor  # noqa: E402


def torch_loop(directory: Path, texts: list, batch_size: int, max_seq_length: int, padding: str):
    """`(run, padded_tokens)`: one pass of the plain PyTorch loop, and the tokens it pads to."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), use_fast=True)
    model = transformers.BertForSequenceClassification.from_pretrained(
        str(directory), dtype=torch.float32
    ).eval()
    pairs = isinstance(texts[0], tuple)
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]

    def tokenize(batch):
        columns = [list(column) for column in zip(*batch, strict=True)] if pairs else [batch]
        return tokenizer(
            *columns,
            padding=padding,
            truncation="longest_first",
            max_length=max_seq_length,
            return_tensors="pt",
        )

    @torch.inference_mode()
    def run():
        return torch.cat([model(**tokenize(batch)).logits for batch in batches])

    padded = sum(int(tokenize(batch)["input_ids"].numel()) for batch in batches)
    return run, padded


def predictor_padded_tokens(predictor: Predictor, texts: list) -> int:
    """Tokens the predictor's forwards see: batch_size x bucket per batch, padding rows included."""
    lengths = np.sort(predictor.encode(texts).lengths)
    size = predictor.batch_size
    return sum(
        size * pipeline.padded_length(int(lengths[i : i + size].max()), predictor.buckets)
        for i in range(0, len(lengths), size)
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    split = args.split or eval_split(task)
    examples = sources.read_split(task, split, limit=args.limit)
    texts = [e.text_a if e.text_b is None else (e.text_a, e.text_b) for e in examples]
    directory = bench.checkpoint_dir(args.export_dir)

    predictors = {
        compute: Predictor(
            directory,
            task=task,
            max_seq_length=args.max_seq_length,
            batch_size=args.batch,
            compute=compute,
        ).warmup()
        for compute in args.compute
    }
    compiled = {compute: p.compilations for compute, p in predictors.items()}
    candidates, padded, padding_names = {}, {}, {}
    for compute, predictor in predictors.items():
        name = "bertjax Predictor" + ("" if compute == "fp32" else f" ({compute})")
        candidates[name] = lambda p=predictor: p.predict(texts).logits
        padded[name] = predictor_padded_tokens(predictor, texts)
        padding_names[name] = f"sorted, buckets {list(predictor.buckets)}"
    predictor = predictors[args.compute[0]]
    for padding in args.torch_padding:
        name = f"torch loop ({padding})"
        width = "batch's longest" if padding == "longest" else str(args.max_seq_length)
        candidates[name], padded[name] = torch_loop(
            directory, texts, args.batch, args.max_seq_length, padding
        )
        padding_names[name] = f"input order, pad to {width}"

    load_before = os.getloadavg()
    times = bench.interleave(candidates, warmup=1, repeats=args.repeats)
    load_after = os.getloadavg()
    for compute, p in predictors.items():
        if p.compilations != compiled[compute]:
            raise RuntimeError(f"the {compute} predictor recompiled while timed")

    ours = predictor.predict(texts).logits
    rows = []
    for name, run in candidates.items():
        summary = bench.summarize(times[name])
        logits = np.asarray(run())
        rows.append(
            {
                "candidate": name,
                "padding": padding_names[name],
                "padded_tokens": padded[name],
                "best_s": summary["best_ms"] / 1e3,
                "median_s": summary["median_ms"] / 1e3,
                "sentences_per_s": len(texts) / (summary["best_ms"] / 1e3),
                "max_abs_logit_diff": float(np.abs(logits - ours).max()),
                "argmax_agreement": float(np.mean(logits.argmax(-1) == ours.argmax(-1))),
                "times_s": times[name],
            }
        )
    return {
        "setup": {
            "export_dir": str(directory),
            "task": task.name,
            "split": split,
            "examples": len(texts),
            "batch": args.batch,
            "max_seq_length": args.max_seq_length,
            "repeats": args.repeats,
            "torch_threads": args.threads,
            "cores": len(os.sched_getaffinity(0)),
            "compilations": compiled[args.compute[0]],
            "load_average_before": load_before,
            "load_average_after": load_after,
            "device": str(jax.devices()[0].device_kind),
            "versions": {
                "jax": jax.__version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
        },
        "rows": rows,
    }


def print_report(result: dict[str, Any]) -> None:
    setup, rows = result["setup"], result["rows"]
    print(
        f"{setup['task']} {setup['split']}: {setup['examples']} examples, batch {setup['batch']}, "
        f"max length {setup['max_seq_length']}, on {setup['device']} "
        f"({setup['cores']} cores, torch threads {setup['torch_threads']}); "
        f"best/median of {setup['repeats']} interleaved passes after 1 warm-up"
    )
    reference = next((r for r in rows if r["candidate"].startswith("torch")), rows[0])
    print(
        "| candidate | padding | padded tokens | best s | median s | sentences/s | vs torch "
        "| max logit diff vs bertjax | argmax agreement |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['candidate']} | {row['padding']} | {row['padded_tokens']:,} "
            f"| {row['best_s']:.3f} | {row['median_s']:.3f} | {row['sentences_per_s']:.0f} "
            f"| {reference['best_s'] / row['best_s']:.2f}x | {row['max_abs_logit_diff']:.1e} "
            f"| {row['argmax_agreement']:.4f} |"
        )
    before = " ".join(f"{x:.2f}" for x in setup["load_average_before"])
    after = " ".join(f"{x:.2f}" for x in setup["load_average_after"])
    print(f"load average (1/5/15 min): {before} before timing, {after} after")
    print(f"predictor compilations: {setup['compilations']} (warm-up), none while timed")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", metavar="EXPORT_DIR", help="a run's export/ (HF layout)")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--split", default="", help="default: the task's dev split")
    parser.add_argument("--limit", type=int, default=0, help="first N examples; 0: all")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument(
        "--compute", nargs="+", default=["fp32"], choices=list(COMPUTE),
        help="one Predictor per arithmetic; differences are against the first",
    )  # fmt: skip
    parser.add_argument(
        "--torch-padding",
        nargs="+",
        choices=("longest", "max_length"),
        default=["longest", "max_length"],
        help="PyTorch loops to time: pad each batch to its longest row and/or to max length",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per candidate")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--json", type=Path, help="write setup and rows here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch < 1 or args.threads < 1:
        parser.error("--repeats, --batch and --threads must be >= 1")
    try:
        result = measure(args)
    except (ValueError, OSError, RuntimeError) as err:
        parser.error(str(err))
    print_report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
