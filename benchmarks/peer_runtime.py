"""bertjax against the runtimes users compare with: PyTorch, ONNX Runtime fp32 and dynamic int8.

Backends, each in its own worker process (this script with `--worker BACKEND`),
each with `--threads` threads (torch.set_num_threads, ORT intra_op_num_threads;
XLA uses its default, every core the process may run on; with fewer threads than
cores every worker is pinned to the first `--threads` cores):

  torch-fp32    transformers BertForSequenceClassification (BertModel without a
                head) of the checkpoint, under torch.inference_mode: the baseline
  ort-fp32      ONNX Runtime on the checkpoint exported by torch.onnx.export
                (dynamo exporter, dynamic batch and sequence axes, opset --opset)
  ort-int8      ONNX Runtime on `quantize_dynamic(..., weight_type=QInt8)` of that file
  bertjax-fp32  jitted `model.apply({"params": params}, ids, mask, types)`
  bertjax-int8  the same with every matmul in int8 (`bertjax_forward` builds both)
  bertjax-int8-stored  kernels and embeddings quantized once to stored int8 (W8A8:
                activations quantized per token, int8 x int8 -> int32)
  bertjax-bf16  fp32 weights, every matmul in bfloat16 with float32 accumulation
  bertjax-int8-bf16  stored int8 weights, bf16 activations (W8A16, `Interventions(
                matmul=BFLOAT16)`): the int8 artifact at bf16 speed

Timing: all workers warm up on a fixed random batch [B, --seq] (full attention
mask), then in each of `--rounds` rounds and at each batch size every backend,
in an order rotated by one per round, times the median of `--repeats` blocking
calls (after one untimed call) while the others wait idle; a backend's time is
the minimum over rounds of its medians. The ONNX files are exported once per
checkpoint into `--cache`. `--eval TASK=DIR` runs every backend on DIR's dev set
of TASK (identical token ids for all, padded to one length) and reports the
official metrics and label agreement with torch-fp32.

  python benchmarks/peer_runtime.py runs/teacher/sst2/export --batch 1 32 --seq 128 \
      --rounds 5 --eval sst2=runs/teacher/sst2/export --json runs/peer_runtime.json

Times from a loaded machine are not comparable to an idle one's: the load
average is printed at start and end.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BACKENDS = (
    "torch-fp32",
    "ort-fp32",
    "ort-int8",
    "bertjax-fp32",
    "bertjax-int8",
    "bertjax-int8-stored",
    "bertjax-bf16",
    "bertjax-int8-bf16",
)
BASELINE = "torch-fp32"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
SETTLE_SECONDS = 0.05  # lets the previous worker's spinning thread pool go to sleep

# A batch of [B, T] integer arrays named INPUT_NAMES -> a zero-argument call that
# runs one blocking forward and returns its output (logits or last hidden state).
Bind = Callable[[dict[str, np.ndarray]], Callable[[], Any]]


class Backend(NamedTuple):
    """A loaded model: `bind(batch)()` is one forward; `size_bytes` of its model file(s)."""

    bind: Bind
    size_bytes: int
    info: dict[str, Any]


# ---------------------------------------------------------------- checkpoint files


def weight_files(export_dir: Path) -> list[Path]:
    """The weight files of an HF-layout checkpoint (safetensors, shards or .bin)."""
    export_dir = Path(export_dir)
    if (export_dir / "model.safetensors").is_file():
        return [export_dir / "model.safetensors"]
    index = export_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [export_dir / shard for shard in shards]
    if (export_dir / "pytorch_model.bin").is_file():
        return [export_dir / "pytorch_model.bin"]
    raise FileNotFoundError(f"{export_dir}: no model.safetensors, shards or pytorch_model.bin")


# ---------------------------------------------------------------- backends (worker side)


def torch_forward(export_dir: Path, threads: int) -> Backend:
    """transformers fp32 under torch.inference_mode, `threads` intra-op threads."""
    import torch
    import transformers

    from bertjax.bench.peers import file_bytes, torch_model

    torch.set_num_threads(threads)
    model, output = torch_model(export_dir)

    def bind(batch):
        feed = {name: torch.from_numpy(batch[name].astype(np.int64)) for name in INPUT_NAMES}

        @torch.inference_mode()
        def run():
            return model(**feed)[output]

        return run

    info = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "threads": torch.get_num_threads(),
    }
    return Backend(bind, file_bytes(weight_files(export_dir)), info)


def ort_forward(onnx_path: Path, threads: int) -> Backend:
    """An ONNX Runtime CPU session (default graph optimizations), `threads` intra-op threads."""
    import onnxruntime

    from bertjax.bench.peers import onnx_bytes, ort_predict

    predict = ort_predict(onnx_path, threads)

    def bind(batch):
        feed = {name: batch[name].astype(np.int64) for name in INPUT_NAMES}
        return lambda: predict(feed)

    info = {"versions": {"onnxruntime": onnxruntime.__version__}, "threads": threads}
    return Backend(bind, onnx_bytes(onnx_path), info)


def bertjax_forward(export_dir: Path, variant: str) -> Backend:
    """bertjax's jitted eval forward of a checkpoint: "fp32", "int8" (every matmul int8,
    weights quantized on each call) or "int8-stored" (the fp32 checkpoint's params
    quantized once into stored int8, `methods.quant.storage.quantize_params`: Dense
    kernels and embeddings int8, Dense matmuls int8 x int8 -> int32, attention float).

    All bertjax model construction is here, so that changes of the model's
    interface are made in one place. The output is the logits when the
    checkpoint has a sequence head, else the last hidden state; the size is
    that of the checkpoint's weight files, for "int8-stored" the bytes of its int8
    params (what `save_pretrained` would write, less the safetensors header).
    """
    import jax
    import jaxlib

    from bertjax import models
    from bertjax.bench.latency import checkpoint_head, jitted_forward, model_size
    from bertjax.bench.peers import file_bytes
    from bertjax.models.interventions import BFLOAT16, Interventions

    if variant == "int8":
        from methods.quant import INT8_PRODUCTS

        interventions = Interventions(matmul=INT8_PRODUCTS)
    elif variant in ("fp32", "int8-stored"):
        interventions = None
    elif variant in ("bf16", "int8-bf16"):
        interventions = Interventions(matmul=BFLOAT16)
    else:
        raise ValueError(f"unknown bertjax variant {variant!r}")
    head = checkpoint_head(export_dir)
    model, params = models.load_pretrained(export_dir, head=head)
    size = file_bytes(weight_files(export_dir))
    if variant in ("int8-stored", "int8-bf16"):
        from methods.quant.storage import quantize_params

        params = jax.device_get(jax.jit(quantize_params)(params))
        size = model_size(params)["bytes"]
    forward = jitted_forward(model, interventions)

    def bind(batch):
        # Params are an argument, not a closed-over constant XLA could fold.
        args = jax.device_put((params, *(batch[name].astype(np.int32) for name in INPUT_NAMES)))
        return lambda: jax.block_until_ready(forward(*args))

    info = {
        "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__},
        "threads": len(os.sched_getaffinity(0)),  # XLA's default pool size
        "device": jax.devices()[0].device_kind,
    }
    return Backend(bind, size, info)


def load_backend(name: str, export_dir: Path, onnx_path: Path | None, threads: int) -> Backend:
    """The backend called `name` (one of BACKENDS) of a checkpoint."""
    if name == "torch-fp32":
        return torch_forward(export_dir, threads)
    if name in ("ort-fp32", "ort-int8"):
        if onnx_path is None:
            raise ValueError(f"{name} needs an .onnx file")
        return ort_forward(onnx_path, threads)
    if name.startswith("bertjax-"):
        return bertjax_forward(export_dir, name.split("-", 1)[1])
    raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")


# ---------------------------------------------------------------- ONNX export (parent side)


def onnx_cache_dir(export_dir: Path, cache: Path, opset: int, preprocess: bool) -> Path:
    """`cache/<name>-<sha>`: keyed by the checkpoint's path, config, weight files and tools."""
    import onnxruntime
    import torch
    import transformers

    export_dir = Path(export_dir).resolve()
    key = {
        "dir": str(export_dir),
        "config": (export_dir / "config.json").read_text(),
        "weights": [
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weight_files(export_dir)
        ],
        "opset": opset,
        "preprocess": preprocess,
        "versions": [torch.__version__, transformers.__version__, onnxruntime.__version__],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = "-".join(export_dir.parts[-2:]).replace(os.sep, "_")
    return Path(cache) / f"{stem}-{digest}"


def export_onnx(
    export_dir: Path, cache: Path, *, opset: int = 18, preprocess: bool = False
) -> dict[str, Path]:
    """`{"fp32": model.onnx, "int8": model.int8.onnx}` of a checkpoint, made once and
    cached under `onnx_cache_dir` (`bertjax.bench.peers.export_onnx` says how)."""
    from bertjax.bench import peers

    folder = onnx_cache_dir(export_dir, cache, opset, preprocess)
    return peers.export_onnx(export_dir, folder, opset=opset, preprocess=preprocess)


# ---------------------------------------------------------------- worker protocol


def time_calls(run: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of `repeats` blocking calls of `run`, after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(1e3 * (time.perf_counter() - start))
    return times


def load_inputs(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in INPUT_NAMES}


def serve(backend: Backend, requests: IO[str], replies: IO[str]) -> None:
    """Answers JSON-line requests until "quit" or end of input, one JSON line each.

    {"op": "time", "inputs": NPZ, "warmup": W, "repeats": N}
        -> {"times_ms": [...], "median_ms": m}
    {"op": "predict", "inputs": NPZ, "output": NPY, "batch_size": B}
        -> {"rows": N}: the outputs of rows [0, N) in chunks of B, saved to NPY
    A failed request answers {"error": "..."} and the worker goes on.
    """
    bound: dict[str, Callable[[], Any]] = {}

    def reply(message):
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    reply({"ready": True, "size_bytes": backend.size_bytes, **backend.info})
    for line in requests:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            op = request["op"]
            if op == "quit":
                return
            if op == "time":
                if request["inputs"] not in bound:
                    bound[request["inputs"]] = backend.bind(load_inputs(request["inputs"]))
                run = bound[request["inputs"]]
                times = time_calls(run, int(request["warmup"]), int(request["repeats"]))
                median = statistics.median(times) if times else None
                reply({"times_ms": times, "median_ms": median})
            elif op == "predict":
                inputs, size = load_inputs(request["inputs"]), int(request["batch_size"])
                rows = len(inputs["input_ids"])
                outputs = [
                    np.asarray(
                        backend.bind({k: v[start : start + size] for k, v in inputs.items()})()
                    )
                    for start in range(0, rows, size)
                ]
                np.save(request["output"], np.concatenate(outputs).astype(np.float32))
                reply({"rows": rows})
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as err:  # reported to the parent, which raises
            reply({"error": f"{type(err).__name__}: {err}"})


def limit_threads(threads: int) -> None:
    """Pins this process to its first `threads` cores when it may use more."""
    cores = sorted(os.sched_getaffinity(0))
    if threads < len(cores):
        os.sched_setaffinity(0, cores[:threads])


def worker_main(args: argparse.Namespace) -> None:
    """A worker process: loads one backend, then `serve`s on stdin/stdout."""
    limit_threads(args.threads)
    # Replies go to the real stdout; whatever the libraries print goes to stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        backend = load_backend(args.worker, Path(args.model), args.onnx, args.threads)
    except Exception as err:
        replies.write(json.dumps({"error": f"{type(err).__name__}: {err}"}) + "\n")
        raise
    serve(backend, sys.stdin, replies)
    replies.flush()
    sys.stderr.flush()
    os._exit(0)  # skips the frameworks' interpreter teardown, which takes seconds


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self, backend: str, export_dir: Path, onnx_path: Path | None, threads: int):
        self.backend = backend
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", backend]
        command += [str(export_dir), "--threads", str(threads)]
        if onnx_path is not None:
            command += ["--onnx", str(onnx_path)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.info: dict[str, Any] = {}

    def receive(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            status = self.process.wait()
            raise RuntimeError(f"{self.backend} worker exited (status {status}); see its stderr")
        message = json.loads(line)
        if "error" in message:
            raise RuntimeError(f"{self.backend} worker: {message['error']}")
        return message

    def request(self, **message: Any) -> dict[str, Any]:
        self.process.stdin.write(json.dumps(message, default=str) + "\n")
        self.process.stdin.flush()
        return self.receive()

    def quit(self) -> None:
        """Asks the worker to exit (without waiting: see `wait`)."""
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.close()

    def wait(self) -> None:
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def start_workers(
    backends: Sequence[str], export_dir: Path, onnx_files: dict[str, Path], threads: int
):
    """Starts one worker per backend (all at once), waits until each has loaded."""
    workers: dict[str, Worker] = {}
    try:
        for name in backends:
            onnx_path = onnx_files.get(name.split("-")[1]) if name.startswith("ort-") else None
            workers[name] = Worker(name, export_dir, onnx_path, threads)
        for worker in workers.values():
            worker.info = worker.receive()
        yield workers
    finally:
        for worker in workers.values():  # all at once, then wait for each
            worker.quit()
        for worker in workers.values():
            worker.wait()


# ---------------------------------------------------------------- measurements (parent side)


def rotated(names: Sequence[str], round_index: int) -> list[str]:
    """names starting at position round_index mod len(names): A B C, B C A, C A B, ..."""
    first = round_index % len(names)
    return [*names[first:], *names[:first]]


def time_rounds(
    workers: dict[str, Worker],
    inputs: dict[int, Path],
    *,
    rounds: int,
    repeats: int,
    warmup: int,
) -> dict[tuple[str, int], list[list[float]]]:
    """Per (backend, batch): the per-call ms of each round (see the module doc)."""
    names = list(workers)
    for path in inputs.values():  # compilation and first-touch costs, untimed
        for name in names:
            workers[name].request(op="time", inputs=str(path), warmup=warmup, repeats=0)
    times: dict[tuple[str, int], list[list[float]]] = {
        (name, batch): [] for name in names for batch in inputs
    }
    for round_index in range(rounds):
        for batch, path in inputs.items():
            for name in rotated(names, round_index):
                time.sleep(SETTLE_SECONDS)
                reply = workers[name].request(
                    op="time", inputs=str(path), warmup=1, repeats=repeats
                )
                times[name, batch].append(reply["times_ms"])
    return times


def timing_rows(
    times: dict[tuple[str, int], list[list[float]]], sizes: dict[str, int], seq: int
) -> list[dict[str, Any]]:
    """One row per (backend, batch): min over rounds of the median ms, speed-up vs torch."""
    rows = []
    for (name, batch), per_round in times.items():
        medians = [statistics.median(calls) for calls in per_round]
        rows.append(
            {
                "backend": name,
                "batch": batch,
                "seq": seq,
                "ms": min(medians),
                "medians_ms": medians,
                "times_ms": per_round,
                "size_bytes": sizes[name],
            }
        )
    for row in rows:
        base = [r for r in rows if r["backend"] == BASELINE and r["batch"] == row["batch"]]
        row["speedup_vs_torch"] = base[0]["ms"] / row["ms"] if base else None
    return rows


def write_npz(path: Path, batch: dict[str, np.ndarray]) -> Path:
    np.savez(path, **{name: batch[name] for name in INPUT_NAMES})
    return path


def evaluate(
    task_name: str,
    workers: dict[str, Worker],
    export_dir: Path,
    scratch: Path,
    *,
    max_seq_length: int,
    batch_size: int,
) -> list[dict[str, Any]]:
    """One row per backend: dev metrics of `task_name`, agreement with torch-fp32.

    Every backend gets the same token ids (bertjax.data.tokenizer), all rows
    padded to one length: the bucket of the longest example.
    """
    from bertjax.data import eval_split, get_task, pipeline
    from bertjax.data.tokenizer import load_encoded, load_tokenizer
    from bertjax.train.evaluation import metrics_of

    task = get_task(task_name)
    encoded = load_encoded(task, eval_split(task), load_tokenizer(export_dir), max_seq_length)
    batch = pipeline.collate(encoded, np.arange(len(encoded)), len(encoded))
    inputs = write_npz(scratch / f"eval-{task.name}.npz", batch)
    logits = {}
    for name, worker in workers.items():
        out = scratch / f"eval-{task.name}-{name}.npy"
        worker.request(op="predict", inputs=str(inputs), output=str(out), batch_size=batch_size)
        logits[name] = np.load(out)
    reference = logits.get(BASELINE)
    rows = []
    for name, values in logits.items():
        row = {
            "task": task.name,
            "backend": name,
            "model": str(export_dir),
            "examples": len(encoded),
            "padded_length": int(batch["input_ids"].shape[1]),
            **metrics_of(task, values, encoded.labels),
        }
        if reference is not None:
            row["max_abs_diff_vs_torch"] = float(np.abs(values - reference).max())
            if not task.is_regression:
                row["agreement_vs_torch"] = float(
                    np.mean(values.argmax(-1) == reference.argmax(-1))
                )
        rows.append(row)
    return rows


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def print_timing(rows: list[dict[str, Any]], batches: Sequence[int]) -> None:
    names = list(dict.fromkeys(row["backend"] for row in rows))
    by_key = {(row["backend"], row["batch"]): row for row in rows}
    has_base = BASELINE in names
    header = ["backend", *[f"batch {b} ms" for b in batches]]
    if has_base:
        header += [f"x vs {BASELINE} (b{b})" for b in batches]
    print("| " + " | ".join([*header, "size MB"]) + " |")
    print("|---" + "|---:" * len(header) + "|")
    for name in names:
        cells = [name, *[f"{by_key[name, b]['ms']:.2f}" for b in batches]]
        if has_base:
            cells += [f"{by_key[name, b]['speedup_vs_torch']:.2f}x" for b in batches]
        cells.append(f"{by_key[name, batches[0]]['size_bytes'] / 1e6:.1f}")
        print("| " + " | ".join(cells) + " |")


def print_eval(rows: list[dict[str, Any]]) -> None:
    from bertjax.data import get_task

    print("| task | backend | metrics | agreement vs torch | max abs diff vs torch |")
    print("|---|---|---|---:|---:|")
    for row in rows:
        metrics = ", ".join(f"{m} {row[m]:.4f}" for m in get_task(row["task"]).metric_names)
        agreement = row.get("agreement_vs_torch")
        diff = row.get("max_abs_diff_vs_torch")
        print(
            f"| {row['task']} | {row['backend']} | {metrics} | "
            f"{'-' if agreement is None else f'{agreement:.4f}'} | "
            f"{'-' if diff is None else f'{diff:.2g}'} |"
        )


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="checkpoint dir to time (HF layout)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before round 1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument(
        "--eval", action="append", default=[], metavar="TASK=DIR", help="repeatable"
    )
    parser.add_argument("--eval-seq", type=int, default=128, help="max tokens per example")
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument("--cache", type=Path, default=None, help="where .onnx files are kept")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument(
        "--quant-preprocess",
        action="store_true",
        help="run ORT's quant_pre_process before quantize_dynamic",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="write everything here")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--onnx", type=Path, help=argparse.SUPPRESS)
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parses flags, measures, prints the tables and writes `--json`; returns what it wrote."""
    parser, args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return {}
    if args.model is None and not args.eval:
        parser.error("give a checkpoint dir to time, or --eval TASK=DIR")
    if min(args.batch) < 1 or args.seq < 1 or args.rounds < 1 or args.repeats < 1:
        parser.error("--batch, --seq, --rounds and --repeats must be >= 1")
    if args.opset < 17:
        parser.error("--opset must be >= 17")
    evals = []
    for spec in args.eval:
        task, _, directory = spec.partition("=")
        if not directory:
            parser.error(f"--eval {spec}: expected TASK=DIR")
        evals.append((task, directory))
    from bertjax import bench, paths

    try:
        model_dir = bench.checkpoint_dir(args.model).resolve() if args.model else None
        evals = [(task, bench.checkpoint_dir(d).resolve()) for task, d in evals]
    except FileNotFoundError as err:
        parser.error(str(err))
    cache = args.cache or paths.cache_root() / "peer_runtime"
    load_start = os.getloadavg()
    backends = list(dict.fromkeys(args.backends))
    onnx = {}
    for directory in dict.fromkeys([model_dir, *(d for _, d in evals)]):
        if directory is not None and any(name.startswith("ort-") for name in backends):
            onnx[directory] = export_onnx(
                directory, cache, opset=args.opset, preprocess=args.quant_preprocess
            )
    rows, eval_rows, worker_info = [], [], {}
    with tempfile.TemporaryDirectory(prefix="peer_runtime-") as scratch:
        scratch = Path(scratch)
        # One set of workers per checkpoint, for its timing and its evaluations.
        for directory in dict.fromkeys(d for d in [model_dir, *(d for _, d in evals)] if d):
            with start_workers(backends, directory, onnx.get(directory, {}), args.threads) as ws:
                if directory == model_dir:
                    worker_info = {name: w.info for name, w in ws.items()}
                    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
                    inputs = {
                        batch: write_npz(
                            scratch / f"time-b{batch}.npz",
                            bench.random_batch(vocab, batch, args.seq),
                        )
                        for batch in dict.fromkeys(args.batch)
                    }
                    times = time_rounds(
                        ws, inputs, rounds=args.rounds, repeats=args.repeats, warmup=args.warmup
                    )
                    sizes = {name: info["size_bytes"] for name, info in worker_info.items()}
                    rows = timing_rows(times, sizes, args.seq)
                for task in (task for task, d in evals if d == directory):
                    eval_rows += evaluate(
                        task,
                        ws,
                        directory,
                        scratch,
                        max_seq_length=args.eval_seq,
                        batch_size=args.eval_batch,
                    )
    load_end = os.getloadavg()
    setup = {
        "model": str(model_dir) if model_dir else None,
        "batch": args.batch,
        "seq": args.seq,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "threads": args.threads,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average_at_start": load_start,
        "load_average_at_end": load_end,
        "workers": worker_info,
        "onnx": {str(d): {k: str(p) for k, p in files.items()} for d, files in onnx.items()},
        "opset": args.opset,
        "quant_preprocess": args.quant_preprocess,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "python": platform.python_version(),
    }
    print(f"cpu: {setup['cpu']} ({setup['cores']} cores), {args.threads} threads per backend")
    print("load average (1/5/15 min): start {:.2f} {:.2f} {:.2f}".format(*load_start))
    if rows:
        print(
            f"seq {args.seq}: min over {args.rounds} rounds of the median of {args.repeats} "
            f"calls, each backend in its own process"
        )
        print_timing(rows, list(dict.fromkeys(args.batch)))
    if eval_rows:
        print_eval(eval_rows)
    print("load average (1/5/15 min): end {:.2f} {:.2f} {:.2f}".format(*load_end))
    result = {"setup": setup, "timing": rows, "eval": eval_rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
