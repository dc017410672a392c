"""The task's seed-0 teacher in the runtimes users compare with: PyTorch fp32 and
ONNX Runtime dynamic int8, measured once per task into `peers.json` beside the
teacher's `latency.json`.

What is measured:
- latency: batch 1 and 32, seq 128, `bench.random_batch` ids with a full mask; best
  of `repeats` round-robin calls (`bench.interleave`) of the PyTorch fp32 teacher
  (transformers, `torch.inference_mode`) and ONNX Runtime on its dynamic int8
  quantization (`quantize_dynamic`, int8 weights, activations quantized per call),
  in the same rounds, in this process with each runtime's default thread count
  (ORT's idle threads do not spin, so they leave the cores to PyTorch's calls);
- bytes: the int8 .onnx file on disk, and the PyTorch teacher's fp32 parameters;
- dev: both on the task's whole dev split as the teacher was evaluated (its config's
  max_seq_length, eval_limit and data source; length-bucketed batches of 32, the
  same token ids for both): each one's official metrics and the int8 model's loyalty
  to the PyTorch teacher (label and probability loyalty; Pearson and RMS gap for
  STS-B). Dev sets are at most 1,500 examples: a minute or two on a CPU.

The ONNX files are exported into the teacher's `onnx/` folder and removed once
measured (their bytes are recorded). `cells.run` calls `ensure` for every seed-0
teacher it visits, finished or not, so a teacher that finished before peers were
measured gets its peers.json on the next invocation.
"""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np

from bertjax import bench

FILE = "peers.json"
BATCHES = (1, 32)
SEQ = 128
RUNTIMES = ("torch", "onnx", "onnxruntime", "transformers")


def missing_runtime() -> str | None:
    """Why the peers cannot be measured here (a package not installed), or None."""
    absent = [name for name in RUNTIMES if importlib.util.find_spec(name) is None]
    return f"{', '.join(absent)} not installed" if absent else None


def ensure(directory: Path, task: str) -> dict | None:
    """The seed-0 teacher's peers.json in `directory` (its workdir), measuring it first
    when absent; None (nothing written) when a runtime is not installed."""
    path = directory / FILE
    if path.exists():
        return json.loads(path.read_text())
    if missing_runtime():
        return None
    peers = measure(directory / "export", directory / "onnx", task, _data_config(directory))
    path.write_text(json.dumps(peers, indent=2))
    shutil.rmtree(directory / "onnx", ignore_errors=True)
    return peers


def _data_config(directory: Path) -> dict:
    """The `data` block of the teacher run's config.json (how it was evaluated)."""
    return json.loads((directory / "config.json").read_text())["data"]


def measure(export: Path, onnx_dir: Path, task: str, data: dict, repeats: int = 5) -> dict:
    """Latency, bytes and dev scores of `export` in PyTorch fp32 and ONNX Runtime int8
    (see the module doc); the .onnx files are made in (or reused from) `onnx_dir`."""
    from bertjax.bench import peers

    onnx_path = peers.export_onnx(export, onnx_dir)["int8"]
    ort = peers.ort_predict(onnx_path, spinning=False)
    out = {}
    for batch in BATCHES:
        torch_run, torch_size = peers.torch_forward(export, batch, SEQ)
        inputs = bench.random_batch(_vocab_size(export), batch, SEQ)
        ort_run = lambda inputs=inputs: ort(inputs)  # noqa: E731
        best = bench.best_ms({"torch": torch_run, "ort": ort_run}, repeats=repeats)
        out[f"b{batch}"] = {
            "torch_teacher_ms": best["torch"],
            "ort_int8_ms": best["ort"],
            "ort_int8_speedup_vs_torch_teacher": best["torch"] / best["ort"],
        }
    out["torch_teacher_bytes"] = torch_size["bytes"]
    out["ort_int8_bytes"] = peers.onnx_bytes(onnx_path)
    out["dev"] = dev_scores(export, task, data, peers.torch_predict(export), ort)
    out["load_average_1min"] = os.getloadavg()[0]  # other work on the machine skews ratios
    out["versions"] = _versions()
    return out


def dev_scores(export: Path, task_name: str, data: dict, torch_predict, ort_predict) -> dict:
    """`{examples, torch_teacher: metrics, ort_int8: metrics, ort_int8_loyalty: {...}}`
    of both predictors (`peers.Predict`) on the task's dev split, as `data` says."""
    from bertjax.data import get_task, pipeline, tasks
    from bertjax.data.tokenizer import load_encoded, load_tokenizer
    from bertjax.train import loyalty
    from bertjax.train.evaluation import metrics_of

    task = get_task(task_name)
    encoded = load_encoded(
        task,
        data.get("eval_split") or tasks.eval_split(task),
        load_tokenizer(export),
        data["max_seq_length"],
        data_dir=data.get("root") or None,
        source=data.get("source", "tsv"),
        limit=data.get("eval_limit", 0),
    )
    logits = {"torch_teacher": [], "ort_int8": []}
    rows = []
    for batch in pipeline.eval_batches(encoded, 32):
        real = batch["index"] >= 0
        rows.append(batch["index"][real])
        logits["torch_teacher"].append(torch_predict(batch)[real])
        logits["ort_int8"].append(ort_predict(batch)[real])
    order = np.argsort(np.concatenate(rows))  # back to example order
    logits = {name: np.concatenate(values)[order] for name, values in logits.items()}
    reference, int8 = logits["torch_teacher"], logits["ort_int8"]
    if task.is_regression:
        agreement = loyalty.regression_loyalty(int8, reference)
    else:
        agreement = {
            "label_loyalty": loyalty.label_loyalty(int8, reference),
            "probability_loyalty": loyalty.probability_loyalty(int8, reference),
        }
    return {
        "examples": len(encoded),
        "torch_teacher": metrics_of(task, reference, encoded.labels),
        "ort_int8": metrics_of(task, int8, encoded.labels),
        "ort_int8_loyalty": agreement,
        "max_abs_logit_diff": float(np.abs(int8 - reference).max()),
    }


def _vocab_size(export: Path) -> int:
    return int(json.loads((export / "config.json").read_text())["vocab_size"])


def _versions() -> dict:
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
