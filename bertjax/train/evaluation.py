"""Predictions and official dev metrics of a model over a whole encoded split."""

import numpy as np
from jax.experimental import multihost_utils

from bertjax.data import pipeline
from bertjax.train import mesh as mesh_lib
from bertjax.train import metrics as metrics_lib
from bertjax.train import steps


def predict(eval_step, params, method_state, encoded, batch_size: int, mesh) -> np.ndarray:
    """Logits [N, labels] for every example of `encoded`, in example order."""
    logits = None
    for batch in pipeline.eval_batches(encoded, batch_size):
        inputs = {k: batch[k] for k in steps.MODEL_INPUTS}
        out = eval_step(params, method_state, mesh_lib.shard_batch(inputs, mesh))
        out = np.asarray(multihost_utils.process_allgather(out, tiled=True))
        if logits is None:
            logits = np.zeros((len(encoded), out.shape[-1]), np.float32)
        real = batch["index"] >= 0
        logits[batch["index"][real]] = out[real]
    return logits


def metrics_of(task, logits: np.ndarray, labels: np.ndarray) -> dict:
    """Official metrics of `logits` [N, labels]: regression reads column 0, else argmax."""
    predictions = logits[:, 0] if task.is_regression else logits.argmax(-1)
    return metrics_lib.compute_metrics(task, predictions, labels)


def evaluate(eval_step, state, encoded, task, batch_size: int, mesh):
    """`(official metrics, logits)` of the model the method presents (masked, quantized...)."""
    logits = predict(eval_step, state.params, state.method_state, encoded, batch_size, mesh)
    return metrics_of(task, logits, encoded.labels), logits
