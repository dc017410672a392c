"""Peers timed beside bertjax: transformers' PyTorch model of a checkpoint, and ONNX
Runtime (fp32 and dynamic int8) on that model exported by `torch.onnx.export`.

PyTorch, ONNX and ONNX Runtime are imported only when a peer is built (they are test
and benchmark dependencies, not runtime ones). `benchmarks/peer_runtime.py` runs these
peers in worker processes; `bertjax.reproduce` times them in its own process.
"""

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from bertjax.bench import latency as bench
from bertjax.models.checkpoints import read_state_dict

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")

# A batch of [B, T] integer arrays named INPUT_NAMES -> the model's output as numpy
# (logits [B, labels] with a sequence head, else the last hidden state [B, T, H]).
Predict = Callable[[dict[str, np.ndarray]], np.ndarray]


def torch_model(directory: Path):
    """`(model, output_name)`: transformers' fp32 eval model of a checkpoint.

    BertForSequenceClassification when the checkpoint has a sequence head, else
    BertModel (with a pooler only when the checkpoint has one, as bertjax does).
    Raises RuntimeError when an encoder weight did not load.
    """
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # the check below replaces its load report
    transformers.logging.disable_progress_bar()
    head = bench.checkpoint_head(directory)
    if head:
        cls, kwargs, output = transformers.BertForSequenceClassification, {}, "logits"
    else:
        has_pooler = any(".pooler." in f".{key}" for key in read_state_dict(Path(directory)))
        cls, output = transformers.BertModel, "last_hidden_state"
        kwargs = {"add_pooling_layer": has_pooler}
    model, report = cls.from_pretrained(
        str(directory), dtype=torch.float32, output_loading_info=True, **kwargs
    )
    missing = [k for k in report["missing_keys"] if "pooler." not in k or head]
    if missing or report.get("mismatched_keys"):
        raise RuntimeError(
            f"{directory}: weights did not load into {cls.__name__}: missing={missing[:5]}, "
            f"mismatched={report.get('mismatched_keys')}"
        )
    return model.eval(), output


def torch_predict(directory: Path) -> Predict:
    """One fp32 PyTorch forward of a checkpoint under `torch.inference_mode` per call."""
    import torch

    model, output = torch_model(directory)

    @torch.inference_mode()
    def predict(batch):
        feed = {name: torch.from_numpy(np.asarray(batch[name], np.int64)) for name in INPUT_NAMES}
        return model(**feed)[output].numpy()

    return predict


def torch_forward(
    directory: Path, batch_size: int, seq_len: int, seed: int = 0
) -> tuple[Callable[[], Any], dict[str, int]]:
    """`(run, size)`: one fp32 PyTorch inference call on `bench.random_batch`, and its size.

    Raises RuntimeError when any encoder weight did not load from `directory`.
    """
    import torch

    model, output = torch_model(directory)
    batch = {
        name: torch.from_numpy(value).long()
        for name, value in bench.random_batch(
            model.config.vocab_size, batch_size, seq_len, seed
        ).items()
    }

    @torch.inference_mode()
    def run():
        return model(**batch)[output]

    size = bench.model_size({n: p.detach().numpy() for n, p in model.named_parameters()})
    return run, size


# ---------------------------------------------------------------- ONNX Runtime


def file_bytes(paths: Iterable[Path]) -> int:
    return sum(Path(path).stat().st_size for path in paths)


def onnx_bytes(onnx_path: Path) -> int:
    """Bytes of an .onnx file and of its external data file, if it has one."""
    path = Path(onnx_path)
    return file_bytes([path, *[p for p in [path.with_name(path.name + ".data")] if p.is_file()]])


def export_onnx(
    directory: Path, folder: Path, *, opset: int = 18, preprocess: bool = False
) -> dict[str, Path]:
    """`{"fp32": folder/model.onnx, "int8": folder/model.int8.onnx}` of a checkpoint,
    each made only when absent (the caller keys `folder` to the checkpoint).

    fp32: `torch.onnx.export` (dynamo) of `torch_model(directory)`, inputs int64
    [batch, sequence] with both axes dynamic. int8: ONNX Runtime's dynamic
    quantization, `quantize_dynamic(fp32, weight_type=QInt8)` (int8 weights,
    activations quantized per call), after `quant_pre_process` when `preprocess`.
    """
    folder = Path(folder)
    files = {"fp32": folder / "model.onnx", "int8": folder / "model.int8.onnx"}
    folder.mkdir(parents=True, exist_ok=True)
    if not files["fp32"].is_file():
        _export_fp32(Path(directory), files["fp32"], opset)
    if not files["int8"].is_file():
        _quantize(files["fp32"], files["int8"], preprocess)
    return files


def _export_fp32(directory: Path, out: Path, opset: int) -> None:
    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed"
    model, output = torch_model(directory)

    class Output(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )[output]

    # Three distinct example tensors: one tensor passed as two inputs (ones as both ids
    # and mask) exports a graph whose logits are wrong.
    input_ids = torch.full((2, 12), 1000, dtype=torch.long)
    attention_mask = torch.ones_like(input_ids)
    axes = {0: "batch", 1: "sequence"}
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        # Noise of the exporter itself, on every export: axis renaming and a pytree deprecation.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
        torch.onnx.export(
            Output().eval(),
            (input_ids, attention_mask, torch.zeros_like(input_ids)),
            str(tmp),
            input_names=list(INPUT_NAMES),
            output_names=[output],
            dynamic_shapes={name: axes for name in INPUT_NAMES},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    os.replace(tmp, out)


def _quantize(fp32: Path, out: Path, preprocess: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    source = fp32
    if preprocess:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        # Symbolic shape inference fails on the dynamo export ("Incomplete symbolic
        # shape inference"); ONNX shape inference and ORT's basic optimizations run.
        source = out.with_name(f".{out.stem}.pre.{os.getpid()}.tmp")
        quant_pre_process(str(fp32), str(source), skip_symbolic_shape=True)
    quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8)
    if source != fp32:
        source.unlink()
    os.replace(tmp, out)


def ort_predict(onnx_path: Path, threads: int | None = None, spinning: bool = True) -> Predict:
    """An ONNX Runtime CPU session (default graph optimizations) as a `Predict`.

    `threads`: intra-op threads (None: ORT's default, one per core). `spinning=False`
    makes idle pool threads sleep at once instead of busy-waiting: what a session
    timed in turns with another runtime in the same process needs.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(
        str(onnx_path), options, providers=["CPUExecutionProvider"]
    )
    names = [node.name for node in session.get_inputs()]

    def predict(batch):
        return session.run(None, {name: np.asarray(batch[name], np.int64) for name in names})[0]

    return predict


def ort_forward(
    directory: Path,
    batch_size: int,
    seq_len: int,
    *,
    workdir: Path,
    int8: bool = True,
    seed: int = 0,
    threads: int | None = None,
    spinning: bool = True,
) -> tuple[Callable[[], np.ndarray], dict[str, Any]]:
    """`(run, info)`: one ONNX Runtime call on `bench.random_batch`, and what ran.

    The ONNX files are exported into `workdir` once (`export_onnx`) and reused;
    `threads` and `spinning` go to `ort_predict`.
    `info`: `onnx` (the file), `bytes` (its size on disk), `onnxruntime` (version).
    """
    import onnxruntime

    onnx_path = export_onnx(directory, workdir)["int8" if int8 else "fp32"]
    predict = ort_predict(onnx_path, threads, spinning)
    vocab_size = _vocab_size(directory)
    batch = {
        name: value.astype(np.int64)
        for name, value in bench.random_batch(vocab_size, batch_size, seq_len, seed).items()
    }
    info = {
        "onnx": str(onnx_path),
        "bytes": onnx_bytes(onnx_path),
        "onnxruntime": onnxruntime.__version__,
    }
    return lambda: predict(batch), info


def _vocab_size(directory: Path) -> int:
    return int(json.loads((Path(directory) / "config.json").read_text())["vocab_size"])
