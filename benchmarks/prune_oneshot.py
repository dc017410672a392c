"""One-shot pruning of a fine-tuned model by four scores, dev metric without retraining.

Why: in the compression grid every movement-pruning run collapsed to the majority
class while magnitude pruning at the same sparsity held. This isolates the mask
choice from training: the encoder's Dense kernels of a fine-tuned model are pruned
layer-wise once, by
  magnitude  |W|
  movement   -sum_t g_t * W   (Sanh et al.'s score, accumulated over K batches at
             fixed W; also the first-order Taylor estimate of the loss change when
             a weight is removed, signed)
  taylor     |sum_t g_t * W|  (the same estimate unsigned, Molchanov et al. 2019)
  random     uniform noise
and evaluated on the dev split as is.

  python benchmarks/prune_oneshot.py runs/teacher/mrpc/export --task mrpc
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from bertjax.data import pipeline, tasks
from bertjax.train import evaluation, loop, steps
from bertjax.train import mesh as mesh_lib
from configs import finetune
from methods.pruning import masks as mask_lib
from methods.pruning.magnitude import ENCODER_KERNELS


def accumulated_gw(model, params, encoded, task, batches: int, batch_size: int):
    """sum over `batches` train batches of dL/dW * W (dropout off, weights fixed)."""

    @jax.jit
    def gw(params, batch):
        def loss(p):
            outputs, _ = model.apply({"params": p}, *(batch[k] for k in steps.MODEL_INPUTS))
            return steps.task_loss(
                outputs["logits"], batch["labels"], batch["weights"], task.is_regression
            )

        return jax.tree_util.tree_map(lambda g, w: g * w, jax.grad(loss)(params), params)

    total = jax.tree_util.tree_map(jnp.zeros_like, params)
    order = pipeline.train_batch_indices(encoded, batch_size, seed=0, epoch=0)
    for indices in order[:batches]:
        batch = pipeline.collate(encoded, indices, batch_size)
        total = jax.tree_util.tree_map(jnp.add, total, gw(params, batch))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a fine-tuned model directory (e.g. a run's export/)")
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--batches", type=int, default=16, help="batches of gradient for scores")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    args = parser.parse_args()

    config = finetune.get_config(f"model={args.model},task={args.task}")
    task = tasks.get_task(args.task)
    model, params, tok, _ = loop.build_model(config, task)
    train, dev = loop.load_data(config, task, tok)
    eval_step = steps.make_eval_step(model)
    mesh = mesh_lib.make_mesh()
    selected = mask_lib.select_leaves(params, ENCODER_KERNELS)

    gw = accumulated_gw(model, params, train, task, args.batches, args.batch_size)
    keys = iter(jax.random.split(jax.random.key(0), len(jax.tree_util.tree_leaves(params))))
    scores = {
        "magnitude": jax.tree_util.tree_map(jnp.abs, params),
        "movement": jax.tree_util.tree_map(jnp.negative, gw),
        "taylor": jax.tree_util.tree_map(jnp.abs, gw),
        "random": jax.tree_util.tree_map(lambda p: jax.random.uniform(next(keys), p.shape), params),
    }

    def score_dev(p) -> float:
        logits = evaluation.predict(eval_step, p, {}, dev, 64, mesh)
        return evaluation.metrics_of(task, logits, dev.labels)[task.main_metric]

    dense = score_dev(params)
    if not np.isfinite(dense):
        raise SystemExit("dense model gave a non-finite metric")
    print(f"{args.task} dev {task.main_metric}; encoder kernels pruned layer-wise, not retrained")
    print(f"dense: {dense:.4f}   (movement/taylor scores from {args.batches} x {args.batch_size})")
    print("| score | " + " | ".join(f"{s:.0%}" for s in args.sparsities) + " |")
    print("|---|" + "---|" * len(args.sparsities))
    for name, score in scores.items():
        row = []
        for s in args.sparsities:
            masked = mask_lib.apply_masks(
                params, mask_lib.compute_masks(score, selected, s, "layer")
            )
            row.append(f"{score_dev(masked):.4f}")
        print(f"| {name} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
