"""Logit-KD train step with the teacher run live vs its logits cached, side by side.

The student is the teacher truncated to N layers (DistilBERT-style), the batch a
fixed random [B, T] with no padding; the two compiled steps alternate in rounds
(so machine noise hits both) and the best step time of each is reported. With
the cache, the step skips the teacher's forward pass (`config.distill.cache_teacher`).

  python benchmarks/kd_cache_speed.py TEACHER_DIR [--layers 3] [--rounds 4]
"""

import argparse
import time

import jax
import numpy as np

from bertjax.train import loop, steps
from configs import distill_kd


def _steps(teacher_dir: str, layers: int, batch_size: int, seq_len: int):
    """`{"live": run, "cached": run}`: each runs one compiled KD train step."""
    config = distill_kd.get_config(f"student=teacher:{layers},teacher={teacher_dir},task=mrpc")
    config.data.train_limit = config.data.eval_limit = 64  # the data is not used
    run_setup = loop.create_train_state(config)  # the run's own state, method and teacher
    model, method, state = run_setup.model, run_setup.method, run_setup.state
    teacher, teacher_params = run_setup.teacher, run_setup.teacher_params
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, model.config.vocab_size, (batch_size, seq_len)).astype(np.int32)
    batch = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
        "labels": rng.integers(0, 2, batch_size).astype(np.int32),
        "weights": np.ones(batch_size, np.float32),
    }
    logits = steps.make_eval_step(teacher)(teacher_params, {}, batch)
    live = steps.make_train_step(
        model, regression=False, method=method, teacher=teacher, donate=False
    )
    cached = steps.make_train_step(
        model, regression=False, method=method, teacher="cached", donate=False
    )
    variants = {
        "live": (live, (state, batch, teacher_params)),
        "cached": (cached, (state, {**batch, "teacher_logits": logits})),
    }
    runs = {}
    for name, (step, args) in variants.items():

        def run(step=step, args=args) -> None:
            jax.block_until_ready(step(*args))

        run()  # compile
        runs[name] = run
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", help="a fine-tuned classification model directory")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps-per-round", type=int, default=3)
    args = parser.parse_args()
    runs = _steps(args.teacher, args.layers, args.batch_size, args.seq_len)
    best = {name: float("inf") for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            for _ in range(args.steps_per_round):
                start = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - start)
    print(f"logit KD step, {args.layers}-layer student, batch {args.batch_size} x {args.seq_len}")
    print("| teacher | best s/step | speed-up |\n|---|---:|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.3f} | {best['live'] / seconds:.2f}x |")


if __name__ == "__main__":
    main()
