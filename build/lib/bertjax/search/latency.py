"""AutoTinyBERT's latency predictor, fitted on *measured* latency of extracted sub-models.

`measure` extracts a sub-model (`submodel.slice_params`), builds it as a standalone model
and times its compiled forward (`bench.latency`: warm-up, blocked calls, median of the
repeats) at each batch size. `Predictor` is a least-squares fit, per batch size, of
median milliseconds on three cost terms of a uniform BERT at a fixed sequence length T:
a constant, the layer count, and the multiply-adds of the layers' products (`features`).
The paper fits an MLP on the architecture; with a dozen noisy measurements (a shared CPU)
we keep three free parameters per batch size: on the same measurements one term per
weight shape (seven) gave held-out errors of 98 % / 89 % (batch 1 / 32), these three
130 % / 11 % (benchmarks/results/search.md; batch-1 timings on the loaded machine are noise).
It round-trips through JSON (`to_json` / `from_json`).
"""

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bertjax.bench import latency as bench
from bertjax.models import build
from bertjax.models.config import BertConfig
from bertjax.models.submodel import Arch, slice_params, sub_config

TERMS = ("1", "L", "L*(4hq+2hf+2Tq)")


def features(arch: Arch, head_dim: int, seq_len: int = 128) -> np.ndarray:
    """[len(TERMS)] cost terms of `arch`: a constant (dispatch, embeddings), one per layer
    (per-layer overheads), and the multiply-adds per token of the layers' products (q/k/v
    and output projections 4hq, FFN 2hf, the two attention products 2Tq; in 1e4s)."""
    layers, h, q, f = arch.layers, arch.hidden, arch.qkv(head_dim), arch.ffn
    products = layers * (4 * h * q + 2 * h * f + 2 * seq_len * q) / 1e4
    return np.asarray([1.0, float(layers), products])


def measure(
    params: dict,
    config: BertConfig,
    arch: Arch,
    batch_sizes: Sequence[int] = (1, 32),
    seq_len: int = 128,
    repeats: int = 5,
) -> dict[int, float]:
    """Median milliseconds of the extracted sub-model's jitted forward, per batch size.

    `params` is a full-size encoder tree (no head) of `config` (a supernet's export)."""
    small_config = sub_config(config, arch)
    model, _ = build(small_config)
    sliced = slice_params(params, config, arch)
    out = {}
    for batch_size in batch_sizes:
        forward = bench.make_forward(model, sliced, batch_size, seq_len)
        times = bench.time_fn(forward, warmup=2, repeats=repeats)
        out[batch_size] = bench.summarize(times)["median_ms"]
    return out


@dataclasses.dataclass(frozen=True)
class Predictor:
    """Latency in milliseconds of an `Arch` at `seq_len`, per batch size: `coefficients[b] @
    features(arch)`."""

    head_dim: int
    seq_len: int
    coefficients: dict[int, tuple[float, ...]]

    @classmethod
    def fit(
        cls, archs: Sequence[Arch], seconds: Sequence[dict[int, float]], head_dim: int, seq_len: int
    ) -> "Predictor":
        """Least squares over the measured `(arch, {batch: milliseconds})` pairs."""
        if len(archs) != len(seconds) or not archs:
            raise ValueError("need one measurement per architecture, and at least one")
        x = np.stack([features(arch, head_dim, seq_len) for arch in archs])
        coefficients = {}
        for batch_size in seconds[0]:
            y = np.asarray([s[batch_size] for s in seconds])
            solution, *_ = np.linalg.lstsq(x, y, rcond=None)
            coefficients[int(batch_size)] = tuple(float(c) for c in solution)
        return cls(head_dim, seq_len, coefficients)

    def predict(self, arch: Arch, batch_size: int) -> float:
        if batch_size not in self.coefficients:
            raise ValueError(f"no fit for batch {batch_size}; fitted: {sorted(self.coefficients)}")
        terms = features(arch, self.head_dim, self.seq_len)
        return float(np.dot(self.coefficients[batch_size], terms))

    def errors(self, archs: Sequence[Arch], seconds: Sequence[dict[int, float]]) -> dict:
        """Per batch size: mean and max |predicted - measured| / measured over `archs`."""
        out = {}
        for batch_size in self.coefficients:
            rel = [
                abs(self.predict(arch, batch_size) - s[batch_size]) / s[batch_size]
                for arch, s in zip(archs, seconds, strict=True)
            ]
            out[batch_size] = {"mean_rel_error": float(np.mean(rel)), "max_rel_error": max(rel)}
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "head_dim": self.head_dim,
                "seq_len": self.seq_len,
                "terms": TERMS,
                "coefficients": {str(b): list(c) for b, c in self.coefficients.items()},
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> "Predictor":
        data = json.loads(text)
        if tuple(data["terms"]) != TERMS:
            raise ValueError(f"predictor terms {data['terms']} are not this version's {TERMS}")
        coefficients = {int(b): tuple(c) for b, c in data["coefficients"].items()}
        return cls(int(data["head_dim"]), int(data["seq_len"]), coefficients)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Predictor":
        return cls.from_json(Path(path).read_text())
