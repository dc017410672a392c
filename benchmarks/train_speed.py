"""Train-step throughput: bertjax vs transformers PyTorch, side by side.

Same checkpoint (minilm-l6-h384 + classification head), same fixed random
batch [B, T] with no padding, AdamW, dropout 0.1 on both sides. Rounds
alternate between the two frameworks so that machine noise hits both; the
best step time of each is reported. Also reports bertjax's achieved FLOP/s
(XLA's own FLOP count of the compiled step) as a fraction of this CPU's
measured fp32 matmul peak (best of JAX and PyTorch on a large square matmul).

  python benchmarks/train_speed.py [--batch-size 32] [--seq-len 128] [--rounds 4]
"""

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_baseline  # noqa: E402

from bertjax import models, paths  # noqa: E402
from bertjax.train import steps  # noqa: E402
from bertjax.train.optimizer import make_optimizer  # noqa: E402
from bertjax.train.state import TrainState  # noqa: E402


def jax_step(model_dir: Path, batch_size: int, seq_len: int):
    """`(run_one_step, flops_per_step)` for bertjax's jitted train step."""
    model, params = models.load_pretrained(model_dir, head="classification", num_labels=2)
    train = ml_collections.ConfigDict(
        dict(learning_rate=1e-4, warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1e9)
    )
    state = TrainState.create(params, make_optimizer(train, 10_000), seed=0)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, model.config.vocab_size, (batch_size, seq_len)).astype(np.int32)
    batch = jax.device_put(
        {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids),
            "labels": rng.integers(0, 2, batch_size).astype(np.int32),
            "weights": np.ones(batch_size, np.float32),
        }
    )
    step = steps.make_train_step(model, regression=False, donate=False)
    compiled = step.lower(state, batch).compile()
    flops = float(compiled.cost_analysis().get("flops", float("nan")))
    holder = {"state": state}

    def run() -> None:
        holder["state"], values = compiled(holder["state"], batch)
        jax.block_until_ready(values)

    return run, flops


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 matmul FLOP/s on this CPU, over JAX and PyTorch."""
    a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32))
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return max(2 * n**3 / best, torch_baseline.matmul_peak_flops(n, repeats))


def best_time(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(paths.models_root() / "minilm-l6-h384"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps-per-round", type=int, default=3)
    args = parser.parse_args()

    run_jax, flops = jax_step(Path(args.model_dir), args.batch_size, args.seq_len)
    run_torch = torch_baseline.make_train_step(args.model_dir, args.batch_size, args.seq_len)
    run_jax(), run_torch()  # warm up (compilation, allocator)
    times = {"bertjax": float("inf"), "pytorch": float("inf")}
    for _ in range(args.rounds):
        times["bertjax"] = min(times["bertjax"], best_time(run_jax, args.steps_per_round))
        times["pytorch"] = min(times["pytorch"], best_time(run_torch, args.steps_per_round))
    peak = matmul_peak()
    tokens = args.batch_size * args.seq_len
    print(
        f"train step, batch {args.batch_size} x seq {args.seq_len}, fp32, "
        f"{jax.device_count()} device(s), best of {args.rounds} x {args.steps_per_round}"
    )
    print("| framework | s/step | tokens/s | vs PyTorch |")
    print("|---|---:|---:|---:|")
    for name, seconds in times.items():
        print(
            f"| {name} | {seconds:.3f} | {tokens / seconds:,.0f} | "
            f"{times['pytorch'] / seconds:.2f}x |"
        )
    achieved = flops / times["bertjax"]
    print(
        f"bertjax step: {flops / 1e9:.1f} GFLOP (XLA count), {achieved / 1e9:.1f} GFLOP/s = "
        f"{100 * achieved / peak:.0f}% of measured matmul peak {peak / 1e9:.1f} GFLOP/s"
    )


if __name__ == "__main__":
    main()
