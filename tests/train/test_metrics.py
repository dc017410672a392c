"""GLUE metrics against hand-computed values and scipy, and their degenerate cases."""

import math
import warnings

import numpy as np
import pytest
import scipy.stats

from bertjax.train import metrics


@pytest.fixture(autouse=True)
def warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_accuracy_and_f1_by_hand():
    predictions = np.array([1, 0, 1, 1, 0, 1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    assert metrics.accuracy(predictions, labels) == pytest.approx(3 / 6)
    # tp = 2, fp = 2, fn = 1: 2*2 / (2*2 + 2 + 1)
    assert metrics.f1(predictions, labels) == pytest.approx(4 / 7)


def test_binary_mcc_by_hand():
    # sklearn's documented example: tp=2, fn=1, fp=1, tn=0 -> -1/3.
    assert metrics.matthews_correlation([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(-1 / 3)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    predictions = np.where(rng.random(500) < 0.8, labels, 1 - labels)
    tp = np.sum((predictions == 1) & (labels == 1))
    tn = np.sum((predictions == 0) & (labels == 0))
    fp = np.sum((predictions == 1) & (labels == 0))
    fn = np.sum((predictions == 0) & (labels == 1))
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics.matthews_correlation(predictions, labels) == pytest.approx(expected)


def test_multiclass_mcc_symmetry_and_perfect():
    labels = np.array([0, 1, 2, 2, 1, 0, 2])
    assert metrics.matthews_correlation(labels, labels) == pytest.approx(1.0)
    predictions = np.array([0, 2, 2, 1, 1, 0, 0])
    value = metrics.matthews_correlation(predictions, labels)
    assert value == pytest.approx(metrics.matthews_correlation(labels, predictions))
    assert -1.0 <= value <= 1.0
    assert metrics.matthews_correlation([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "predictions, labels",
    [
        ([1, 1, 1, 1], [1, 1, 1, 1]),  # one class everywhere
        ([0, 0, 0, 0], [1, 0, 1, 0]),  # constant predictions
        ([1, 0, 1, 0], [0, 0, 0, 0]),  # constant labels
    ],
)
def test_mcc_undefined_is_zero(predictions, labels):
    assert metrics.matthews_correlation(predictions, labels) == 0.0


def test_f1_edge_cases():
    assert metrics.f1([0, 0, 0], [0, 0, 0]) == 0.0  # no positives at all
    assert metrics.f1([0, 0, 0], [1, 1, 0]) == 0.0  # nothing predicted positive
    assert metrics.f1([1, 1, 1], [0, 0, 0]) == 0.0  # no true positives
    assert metrics.f1([1, 1, 0], [1, 1, 0]) == 1.0


def test_correlations_match_scipy():
    rng = np.random.default_rng(1)
    labels = np.round(rng.uniform(0, 5, 300), 1)  # rounded: ties, as in STS-B
    predictions = (labels + rng.normal(0, 1, 300)).astype(np.float32)
    predictions[:20] = 2.5  # ties in predictions too
    assert metrics.pearson(predictions, labels) == pytest.approx(
        scipy.stats.pearsonr(predictions.astype(np.float64), labels)[0], abs=1e-9
    )
    assert metrics.spearmanr(predictions, labels) == pytest.approx(
        scipy.stats.spearmanr(predictions, labels)[0], abs=1e-9
    )


def test_correlations_by_hand():
    assert metrics.pearson([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert metrics.pearson([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # Monotone but not linear: spearman 1, pearson below 1.
    assert metrics.spearmanr([1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 100.0]) == pytest.approx(1.0)
    assert metrics.pearson([1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 100.0]) < 0.9


def test_constant_correlations_are_zero():
    assert metrics.pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert metrics.spearmanr([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) == 0.0


@pytest.mark.parametrize(
    "task, names",
    [
        ("mrpc", ["f1", "accuracy"]),
        ("qqp", ["f1", "accuracy"]),
        ("cola", ["matthews_correlation"]),
        ("sst2", ["accuracy"]),
        ("mnli", ["accuracy"]),
        ("rte", ["accuracy"]),
    ],
)
def test_compute_metrics_names(task, names):
    result = metrics.compute_metrics(task, np.array([1, 0, 1]), np.array([1, 1, 1]))
    assert list(result) == names
    assert all(isinstance(value, float) and not math.isnan(value) for value in result.values())


def test_stsb_and_main_score():
    labels = np.array([0.0, 1.0, 2.5, 5.0])
    result = metrics.compute_metrics("STS-B", (labels * 2 + 1)[:, None], labels)
    assert result == pytest.approx({"pearson": 1.0, "spearmanr": 1.0})
    assert metrics.main_score("stsb", result) == result["pearson"]
    mrpc = {"f1": 0.9, "accuracy": 0.8}
    assert metrics.main_score("mrpc", mrpc) == 0.9
    assert metrics.main_score("cola", {"matthews_correlation": 0.3}) == 0.3
    assert metrics.main_score("rte", {"accuracy": 0.6}) == 0.6


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 predictions for 3 labels"):
        metrics.accuracy([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="no predictions"):
        metrics.compute_metrics("rte", [], [])
