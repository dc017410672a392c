"""The distillation teacher: loading it, caching its logits, and loyalty to it.

Logit cache: a method that reads only the teacher's logits (logit KD) need not
run the teacher in every train step. With `config.distill.cache_teacher`, the
teacher (deterministic: no dropout) predicts every training example once; the
logits go to `WORKDIR/teacher_logits.npz` (reused on resume) and each batch
carries its rows as `teacher_logits`. Intermediates (TinyBERT, BERT-EMD) are
not cached: [layers, T, H] per example is gigabytes per task.
"""

from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from bertjax import models, paths
from bertjax.data import tasks
from bertjax.train import loyalty, steps
from bertjax.train import mesh as mesh_lib
from bertjax.train.evaluation import predict

CACHE_FILE = "teacher_logits.npz"


def load_teacher(config: ConfigDict, task, mesh):
    """`(model, replicated params)` of `config.teacher` (distillation, loyalty), loaded once;
    `(None, None)` without a teacher."""
    if not config.get("teacher"):
        if config.get("distill") is not None:
            raise ValueError("config.distill needs config.teacher (a fine-tuned model directory)")
        return None, None
    try:
        directory = models.resolve(config.teacher)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"teacher {config.teacher!r}: not a directory, not in $BERTJAX_MODELS "
            f"({paths.models_root()}), nor on the hub; a teacher is a fine-tuned model "
            "(e.g. a finetune run's export/)"
        ) from None
    head = "regression" if task.is_regression else "classification"
    teacher, params = models.load_pretrained(
        directory, head=head, num_labels=tasks.num_labels(task)
    )
    return teacher, mesh_lib.replicate(params, mesh)


def teacher_loyalty(
    teacher, teacher_params, task, encoded, logits: np.ndarray, config: ConfigDict, mesh
) -> dict:
    """Loyalty to the teacher on `encoded`: label and probability loyalty (Xu et al.
    2021) for classification; prediction correlation and RMS gap for regression."""
    batch_size = config.train.eval_batch_size
    teacher_logits = predict(
        steps.make_eval_step(teacher), teacher_params, {}, encoded, batch_size, mesh
    )
    if task.is_regression:
        return loyalty.regression_loyalty(logits, teacher_logits)
    return {
        "label_loyalty": loyalty.label_loyalty(logits, teacher_logits),
        "probability_loyalty": loyalty.probability_loyalty(logits, teacher_logits),
    }


def check_cacheable(config: ConfigDict, intermediates: tuple[str, ...]) -> bool:
    """Whether this run caches teacher logits; a clear error where it cannot."""
    block = config.get("distill")
    if block is None or not block.get("cache_teacher", False):
        return False
    if intermediates:
        raise ValueError(
            "config.distill.cache_teacher caches teacher logits only, but this method reads "
            f"the teacher's intermediates {intermediates}; set cache_teacher=False"
        )
    return True


def cached_logits(
    teacher, teacher_params, encoded, batch_size: int, mesh, workdir, *, write: bool = True
) -> np.ndarray:
    """The teacher's logits [N, labels] on every example of `encoded`, in example order.

    Read from `workdir/teacher_logits.npz` when it holds as many rows (a resumed
    run), else predicted and, with `write` (process 0 of a multi-process run), written
    there (atomically: a killed write leaves no file).
    """
    path = Path(workdir) / CACHE_FILE
    if path.exists():
        with np.load(path) as stored:
            if stored["logits"].shape[0] == len(encoded):
                return stored["logits"]
    logits = predict(steps.make_eval_step(teacher), teacher_params, {}, encoded, batch_size, mesh)
    if not write:
        return logits
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, logits=logits)
    partial.replace(path)
    return logits
