"""BERT-sized matmuls on this CPU: XLA fp32, bf16 and int8 vs PyTorch, side by side.

Rows are [B*T, K] x [K, N] products of MiniLM-L6 (hidden 384, FFN 1536) at
batch 32 x seq 128 = 4,096 tokens. Candidates, timed round-robin
(`bertjax.bench.interleave`), best of `--repeats`:
  jax fp32       jitted `a @ b`
  torch fp32     `torch.matmul` (threads: the cores this process may use)
  jax int8       int8 x int8 -> int32 `dot_general` on pre-quantized operands
                 (the kernel alone)
  jax int8 dyn   `methods.quant.int8_dot_general` from fp32 operands: quantize
                 both, int8 product, rescale (what the model's int8 path runs)
  xla w8a8       a stored-int8 Dense in XLA (`models.int8`: x quantized per token,
                 XLA's int8 product, both scales) from fp32 x and int8 weights
  vnni w8a8      the same product on our AVX-512 VNNI kernel (`bertjax.kernels`),
                 what a stored-int8 model runs on this CPU (when `available()`)
  jax bf16       bf16 x bf16 -> f32 on pre-cast operands (`preferred_element_type`)
  jax bf16 out   bf16 x bf16 -> bf16 (what a model in `dtype=bfloat16` would run)
  torch bf16     `torch.matmul` of bf16 tensors
The ratio columns are speed-ups of the first named over the second
(e.g. 0.9x: jax fp32 takes 1/0.9 the time of torch fp32). Before timing, the
int8 product is checked exact against NumPy int64, the VNNI kernel against its NumPy
reference (`kernels.reference_int8_dense`, bit for bit) and jax fp32 against torch
fp32 (relative error < 1e-4); a failed check exits 1.

  python benchmarks/matmul_speed.py [--tokens 4096] [--repeats 10]
"""

import argparse
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bertjax import bench, kernels  # noqa: E402
from bertjax.models import int8 as stored_int8  # noqa: E402
from methods.quant import int8_dot_general  # noqa: E402

SHAPES = {"q/k/v or attn-out 384x384": (384, 384), "fused qkv 384x1152": (384, 1152)}
SHAPES |= {"ffn in 384x1536": (384, 1536), "ffn out 1536x384": (1536, 384)}
MATMUL = (((1,), (0,)), ((), ()))


def candidates(tokens: int, k: int, n: int, seed: int = 0) -> dict:
    """Zero-argument callables per candidate, after checking their results."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    xi = rng.integers(-127, 128, (tokens, k), dtype=np.int8)
    wi = rng.integers(-127, 128, (k, n), dtype=np.int8)
    xj, wj, xij, wij = (jnp.asarray(a) for a in (x, w, xi, wi))
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    fp32 = jax.jit(lambda a, b: a @ b)
    int8 = jax.jit(lambda a, b: jax.lax.dot_general(a, b, MATMUL, preferred_element_type=jnp.int32))
    dyn = jax.jit(lambda a, b: int8_dot_general(a, b, MATMUL))
    if not np.array_equal(np.asarray(int8(xij, wij)), xi.astype(np.int64) @ wi.astype(np.int64)):
        raise SystemExit(f"int8 product of {k}x{n} is not exact")
    ours, theirs = np.asarray(fp32(xj, wj)), torch.matmul(xt, wt).numpy()
    if np.abs(ours - theirs).max() > 1e-4 * np.abs(theirs).max():
        raise SystemExit(f"jax and torch fp32 disagree on {k}x{n}")
    xb, wb = xj.astype(jnp.bfloat16), wj.astype(jnp.bfloat16)
    bf16 = jax.jit(
        lambda a, b: jax.lax.dot_general(a, b, MATMUL, preferred_element_type=jnp.float32)
    )
    bf16_out = jax.jit(lambda a, b: a @ b)
    xtb, wtb = xt.bfloat16(), wt.bfloat16()
    scale = jnp.asarray(rng.uniform(1e-3, 2e-2, n), jnp.float32)
    xla_w8a8 = jax.jit(stored_int8._xla_int8_dense)
    found = {}
    if kernels.available():
        vnni = jax.jit(kernels.int8_dense)
        if not np.array_equal(vnni(xj, wij, scale), kernels.reference_int8_dense(x, wi, scale)):
            raise SystemExit(f"the VNNI kernel is not the exact W8A8 product on {k}x{n}")
        found["vnni w8a8"] = lambda: vnni(xj, wij, scale)
    return found | {
        "jax fp32": lambda: fp32(xj, wj),
        "torch fp32": lambda: torch.matmul(xt, wt),
        "jax int8": lambda: int8(xij, wij),
        "jax int8 dyn": lambda: dyn(xj, wj),
        "xla w8a8": lambda: xla_w8a8(xj, wij, scale),
        "jax bf16": lambda: bf16(xb, wb),
        "jax bf16 out": lambda: bf16_out(xb, wb),
        "torch bf16": lambda: torch.matmul(xtb, wtb),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096, help="rows: batch x seq")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    names = (
        "jax fp32", "torch fp32", "jax int8", "jax int8 dyn", "xla w8a8", "vnni w8a8",
        "jax bf16", "jax bf16 out", "torch bf16",
    )  # fmt: skip
    if not kernels.available():
        names = tuple(name for name in names if name != "vnni w8a8")
    print(f"{args.tokens} tokens, best of {args.repeats} interleaved calls, ms (GMAC/s)")
    print(
        "| matmul | " + " | ".join(names) + " | jax fp32 vs torch | int8 dyn vs jax fp32 "
        "| jax bf16 vs jax fp32 | vnni vs jax bf16 |"
    )
    print("|---|" + "---:|" * (len(names) + 4))
    for label, (k, n) in SHAPES.items():
        times = bench.interleave(candidates(args.tokens, k, n), warmup=2, repeats=args.repeats)
        best = {name: 1e3 * min(times[name]) for name in names}
        cells = [f"{best[m]:.2f} ({args.tokens * k * n / best[m] / 1e6:.0f})" for m in names]
        ratios = f"{best['torch fp32'] / best['jax fp32']:.2f}x | "
        ratios += f"{best['jax fp32'] / best['jax int8 dyn']:.2f}x | "
        ratios += f"{best['jax fp32'] / best['jax bf16']:.2f}x | "
        vnni = best.get("vnni w8a8")
        ratios += f"{best['jax bf16'] / vnni:.2f}x" if vnni else "-"
        print(f"| {label} | " + " | ".join(cells) + f" | {ratios} |")


if __name__ == "__main__":
    main()
