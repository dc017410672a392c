"""Official GLUE metrics in numpy/scipy (no sklearn).

Names follow the GLUE leaderboard and HF `evaluate`'s glue metric:
'accuracy', 'f1' (positive class 1), 'matthews_correlation', 'pearson',
'spearmanr'. Degenerate inputs (a single class, constant predictions) give 0.0
rather than NaN, so a collapsed model scores 0 instead of poisoning averages
and checkpoint selection.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from bertjax.data.tasks import Task, get_task


def _check(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predictions = np.asarray(predictions).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.shape[0]} predictions for {labels.shape[0]} labels")
    if predictions.size == 0:
        raise ValueError("no predictions")
    return predictions, labels


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of exact matches."""
    predictions, labels = _check(predictions, labels)
    return float(np.mean(predictions == labels))


def f1(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """Binary F1 of class `positive`: 2 tp / (2 tp + fp + fn); 0.0 when tp = 0."""
    predictions, labels = _check(predictions, labels)
    predicted, actual = predictions == positive, labels == positive
    true_positives = np.sum(predicted & actual)
    denominator = np.sum(predicted) + np.sum(actual)
    return float(2 * true_positives / denominator) if true_positives else 0.0


def matthews_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation (multi-class form, as sklearn); 0.0 when undefined.

    With confusion matrix C, c = trace(C), s = N, p_k = predicted count of k,
    t_k = true count of k:  (c s - p.t) / sqrt((s^2 - p.p) (s^2 - t.t)).
    """
    predictions, labels = _check(predictions, labels)
    classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    true_index, predicted_index = encoded[: labels.size], encoded[labels.size :]
    confusion = np.zeros((classes.size, classes.size), np.float64)
    np.add.at(confusion, (true_index, predicted_index), 1.0)
    true_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, total = np.trace(confusion), confusion.sum()
    covariance = correct * total - predicted_counts @ true_counts
    variance = (total**2 - predicted_counts @ predicted_counts) * (
        total**2 - true_counts @ true_counts
    )
    return float(covariance / np.sqrt(variance)) if variance > 0 else 0.0


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant."""
    predictions, labels = _check(predictions, labels)
    x = predictions.astype(np.float64) - predictions.mean(dtype=np.float64)
    y = labels.astype(np.float64) - labels.mean(dtype=np.float64)
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.clip(np.sum(x * y) / denominator, -1.0, 1.0)) if denominator > 0 else 0.0


def spearmanr(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation (Pearson of average ranks); 0.0 when undefined."""
    predictions, labels = _check(predictions, labels)
    return pearson(scipy.stats.rankdata(predictions), scipy.stats.rankdata(labels))


_METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearmanr": spearmanr,
}


def compute_metrics(
    task: str | Task, predictions: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """The official GLUE metrics of `task`, e.g. {'f1': ..., 'accuracy': ...} for MRPC.

    Args:
      task: a task name or `Task`.
      predictions: [N] argmax'd class ids, or [N] / [N, 1] scores for regression.
      labels: [N] gold labels of the real examples only (drop padding rows,
        i.e. those with weight 0, before calling).
    """
    task = get_task(task)
    return {name: _METRICS[name](predictions, labels) for name in task.metric_names}


def main_score(task: str | Task, metrics: dict[str, float]) -> float:
    """The number used for model selection: MRPC/QQP f1, STS-B pearson, CoLA mcc, else accuracy."""
    return float(metrics[get_task(task).main_metric])
