"""Label and probability loyalty against hand-computed values and scipy."""

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax

from bertjax.train.loyalty import label_loyalty, probability_loyalty, regression_loyalty


def test_identical_models_are_fully_loyal():
    logits = np.random.default_rng(0).normal(size=(20, 3))
    assert label_loyalty(logits, logits) == 1.0
    assert probability_loyalty(logits, logits) == 1.0


def test_label_loyalty_counts_agreeing_argmax():
    teacher = np.asarray([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    student = np.asarray([[1.0, 0.0], [1.0, 0.0], [5.0, 0.0], [0.0, 1.0]])
    assert label_loyalty(student, teacher) == 0.75


def test_probability_loyalty_matches_scipy_jensen_shannon():
    rng = np.random.default_rng(1)
    student, teacher = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    # scipy's jensenshannon is the JS *distance* sqrt(JS) (natural log by default).
    reference = np.mean(
        [1 - jensenshannon(softmax(s), softmax(t)) for s, t in zip(student, teacher, strict=True)]
    )
    np.testing.assert_allclose(probability_loyalty(student, teacher), reference, rtol=1e-9)
    opposite = probability_loyalty(np.asarray([[50.0, -50.0]]), np.asarray([[-50.0, 50.0]]))
    np.testing.assert_allclose(opposite, 1 - np.sqrt(np.log(2)), atol=1e-9)


def test_regression_loyalty_is_correlation_and_rms_gap():
    teacher = np.asarray([0.0, 1.0, 2.0, 3.0])
    same = regression_loyalty(teacher[:, None], teacher)
    assert same == {"teacher_pearson": 1.0, "teacher_rmse": 0.0}
    shifted = regression_loyalty(teacher + 0.5, teacher)
    np.testing.assert_allclose([shifted["teacher_pearson"], shifted["teacher_rmse"]], [1.0, 0.5])
    flipped = regression_loyalty(-teacher, teacher)
    np.testing.assert_allclose(flipped["teacher_pearson"], -1.0)
    assert regression_loyalty(np.ones(4), teacher)["teacher_pearson"] == 0.0
