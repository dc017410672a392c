"""Loyalty of a compressed model to its teacher (Xu et al. 2021, "Beyond Preserved Accuracy").

label loyalty: share of examples where student and teacher predict the same label;
probability loyalty: 1 - sqrt(JS divergence) between their output distributions
(natural log, so JS is in [0, ln 2]), averaged over examples.
Regression (STS-B) has no label distribution; its analogues here are the
Pearson correlation of student and teacher predictions and their RMS gap.
"""

import numpy as np


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def label_loyalty(student_logits: np.ndarray, teacher_logits: np.ndarray) -> float:
    """Fraction of rows whose argmax agrees; inputs are [N, classes]."""
    return float(np.mean(student_logits.argmax(-1) == teacher_logits.argmax(-1)))


def probability_loyalty(student_logits: np.ndarray, teacher_logits: np.ndarray) -> float:
    """Mean over rows of 1 - sqrt(JS(p_student, p_teacher))."""
    p, q = (
        _softmax(np.asarray(student_logits, np.float64)),
        _softmax(np.asarray(teacher_logits, np.float64)),
    )
    m = 0.5 * (p + q)

    def kl(a, b):
        return np.sum(np.where(a > 0, a * (np.log(np.maximum(a, 1e-300)) - np.log(b)), 0.0), -1)

    js = np.clip(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0, None)
    return float(np.mean(1.0 - np.sqrt(js)))


def regression_loyalty(student: np.ndarray, teacher: np.ndarray) -> dict[str, float]:
    """`teacher_pearson` and `teacher_rmse` of [N] (or [N, 1]) student vs teacher predictions."""
    student = np.asarray(student, np.float64).reshape(-1)
    teacher = np.asarray(teacher, np.float64).reshape(-1)
    if student.std() == 0 or teacher.std() == 0:
        pearson = 0.0  # a constant prediction carries nothing of the teacher's ranking
    else:
        pearson = float(np.corrcoef(student, teacher)[0, 1])
    return {
        "teacher_pearson": pearson,
        "teacher_rmse": float(np.sqrt(np.mean((student - teacher) ** 2))),
    }
