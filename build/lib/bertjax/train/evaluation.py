"""Predictions and official dev metrics of a model over a whole encoded split."""

import jax
import numpy as np
from jax.experimental import multihost_utils

from bertjax.data import pipeline
from bertjax.train import mesh as mesh_lib
from bertjax.train import metrics as metrics_lib
from bertjax.train import steps


def predict(eval_step, params, method_state, encoded, batch_size: int, mesh):
    """`eval_step`'s outputs for every example of `encoded`, in example order: logits
    [N, labels], or a dict of per-example arrays [N, ...] when the step returns a dict."""
    gathered = None
    for batch in pipeline.eval_batches(encoded, batch_size):
        inputs = {k: batch[k] for k in steps.MODEL_INPUTS}
        out = eval_step(params, method_state, mesh_lib.shard_batch(inputs, mesh))
        out = jax.tree.map(
            lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), out
        )
        if gathered is None:
            gathered = jax.tree.map(lambda x: np.zeros((len(encoded), *x.shape[1:]), x.dtype), out)
        real = batch["index"] >= 0
        rows = batch["index"][real]
        for store, x in zip(jax.tree.leaves(gathered), jax.tree.leaves(out), strict=True):
            store[rows] = x[real]
    return gathered


def metrics_of(task, logits: np.ndarray, labels: np.ndarray) -> dict:
    """Official metrics of `logits` [N, labels]: regression reads column 0, else argmax."""
    predictions = logits[:, 0] if task.is_regression else logits.argmax(-1)
    return metrics_lib.compute_metrics(task, predictions, labels)


def evaluate(eval_step, state, encoded, task, batch_size: int, mesh):
    """`(official metrics, logits)` of the model the method presents (masked, quantized...)."""
    logits = predict(eval_step, state.params, state.method_state, encoded, batch_size, mesh)
    return metrics_of(task, logits, encoded.labels), logits


def extras(model, method, state, encoded, task, batch_size: int, mesh) -> dict:
    """The method's `eval_report` over the whole split (`{}` for methods without
    `eval_outputs`): one more evaluation pass, collecting its per-example arrays."""
    if not method.has_eval_outputs:
        return {}
    step = steps.make_extras_step(model, method)
    arrays = predict(step, state.params, state.method_state, encoded, batch_size, mesh)
    return method.eval_report(arrays, lambda logits: metrics_of(task, logits, encoded.labels))
