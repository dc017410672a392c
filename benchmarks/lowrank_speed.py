"""Where a factorized Dense is faster: `x @ W` against `(x @ u) @ v` at several ranks.

For MiniLM-L6's kernel shapes (384x384 attention, 384x1536 / 1536x384 FFN) and rows
= batch x seq tokens, each candidate is a jitted product on fixed random operands,
timed round-robin (`bertjax.bench.interleave`), best of `--repeats`. The FLOP ratio
r (in + out) / (in · out) is printed beside the measured time ratio: factorizing pays
only below the break-even rank in · out / (in + out) (192 for 384x384, 307 for 384x1536),
and in practice lower, since two skinny products run at a lower FLOP rate than one.

  python benchmarks/lowrank_speed.py --tokens 128 4096 --ranks 32 64 96 153 192 256
"""

import argparse
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bertjax import bench  # noqa: E402
from methods.lowrank import svd  # noqa: E402

SHAPES = {"384x384": (384, 384), "384x1536": (384, 1536), "1536x384": (1536, 384)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[128, 4096])
    parser.add_argument("--ranks", type=int, nargs="+", default=[32, 64, 96, 153, 192, 256])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.2f} (times are noisy when > 0)")
    print("| tokens | kernel | rank | dense ms | factors ms | time ratio | FLOP ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    dense_product = jax.jit(lambda x, w: x @ w)
    factor_product = jax.jit(lambda x, u, v: (x @ u) @ v)
    rows = []
    for tokens in args.tokens:
        for name, (rows_in, cols) in SHAPES.items():
            x = jnp.asarray(rng.normal(size=(tokens, rows_in)), jnp.float32)
            w = jnp.asarray(rng.normal(size=(rows_in, cols)), jnp.float32)
            candidates = {"dense": lambda x=x, w=w: dense_product(x, w)}
            for rank in args.ranks:
                if rank >= min(rows_in, cols):
                    continue
                u = jnp.asarray(rng.normal(size=(rows_in, rank)), jnp.float32)
                v = jnp.asarray(rng.normal(size=(rank, cols)), jnp.float32)
                candidates[rank] = lambda x=x, u=u, v=v: factor_product(x, u, v)
            times = bench.interleave(candidates, warmup=2, repeats=args.repeats)
            dense = min(times.pop("dense"))
            for rank, spent in times.items():
                flops = rank * (rows_in + cols) / (rows_in * cols)
                row = dict(tokens=tokens, kernel=name, rank=rank, dense_ms=1e3 * dense)
                row.update(factors_ms=1e3 * min(spent), flop_ratio=flops)
                rows.append(row)
                print(
                    f"| {tokens} | {name} | {rank} | {1e3 * dense:.3f} | {1e3 * min(spent):.3f} "
                    f"| {min(spent) / dense:.2f} | {flops:.2f} |"
                )
    print(f"break-even ranks: { {k: round(svd.break_even_rank(s), 1) for k, s in SHAPES.items()} }")
    return rows


if __name__ == "__main__":
    main()
