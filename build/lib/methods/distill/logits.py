"""Logit distillation (Hinton et al. 2015; DistilBERT, PKD): match the teacher's outputs.

Classification: `temperature^2 * CE(softmax(t / T), log_softmax(s / T))` (the
T^2 keeps gradient scale comparable across temperatures), or plain MSE on
logits (`kind="mse"`). Regression: MSE between student and teacher scores.
The task (hard-label) loss is weighted `1 - alpha`, the KD term `alpha`.
Padded rows (weight 0) count for nothing.
"""

import dataclasses

import jax
import jax.numpy as jnp

from methods import losses
from methods.base import Method, fields_from


def soft_cross_entropy(student_logits, teacher_logits, temperature: float):
    """Per-example CE of the student's tempered distribution against the teacher's."""
    targets = jax.nn.softmax(teacher_logits / temperature, axis=-1)
    return -jnp.sum(targets * jax.nn.log_softmax(student_logits / temperature, axis=-1), -1)


@dataclasses.dataclass(frozen=True)
class LogitDistillation(Method):
    temperature: float = 2.0
    alpha: float = 0.5
    kind: str = "soft_ce"
    regression: bool = False

    def __post_init__(self):
        if self.kind not in ("soft_ce", "mse"):
            raise ValueError(f"unknown logit KD kind {self.kind!r}; known: soft_ce, mse")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")

    @classmethod
    def from_config(cls, block, context):
        return cls(**fields_from(cls, block, regression=context.regression))

    @property
    def name(self) -> str:
        return f"distill_kd_{self.kind}"

    def loss(self, task_loss, student, teacher, batch, params, state, step):
        if teacher is None:
            raise ValueError("logit distillation needs a teacher (config.teacher)")
        s = student[0]["logits"].astype(jnp.float32)
        t = jax.lax.stop_gradient(teacher[0]["logits"].astype(jnp.float32))
        if self.regression or self.kind == "mse":
            per_example = jnp.mean(jnp.square(s - t), axis=-1)
        else:
            per_example = self.temperature**2 * soft_cross_entropy(s, t, self.temperature)
        kd = losses.weighted_mean(per_example, batch["weights"])
        return (1.0 - self.alpha) * task_loss + self.alpha * kd, {"kd_loss": kd}
