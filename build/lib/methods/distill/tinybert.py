"""TinyBERT transformer distillation (Jiao et al. 2020).

Losses, each a weighted mean over real tokens of real examples:
  embedding   MSE(E_s W, E_t)
  attention   MSE(A_s, A_t) of the scaled q.k scores, per head, over real
              (query, key) pairs only; padded keys never enter the mean
  hidden      MSE(H_s W, H_t) for each mapped `(student, teacher)` layer pair
  prediction  soft cross-entropy with temperature (MSE for regression)
W is one learnable projection (student width -> teacher width, shared by the
embedding and hidden losses as in the authors' code), created by
`init` under `params["distill"]` only when the widths differ; the
model never sees it and `finalize` drops it. When head counts differ, the
attention maps are compared after averaging over heads.

Two stages (`stage`): "intermediate" (embedding + attention + hidden),
"prediction" (logit KD), or "both": intermediate for the first
`split_step` steps, prediction after. The hard-label loss is off (TinyBERT
learns from the teacher only).
"""

import dataclasses

import jax
import jax.numpy as jnp

from bertjax.models.interventions import Interventions
from methods.base import Method, fields_from
from methods.distill.layer_maps import layer_map
from methods.distill.logits import soft_cross_entropy

STAGES = ("intermediate", "prediction", "both")
PARAMS_KEY = "distill"


def token_weights(batch: dict) -> jax.Array:
    """[B, T] weight of each token: real tokens of real (weight > 0) examples."""
    return batch["attention_mask"].astype(jnp.float32) * batch["weights"][:, None]


def hidden_mse(student: jax.Array, teacher: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean over weighted tokens of the per-token MSE of [B, T, H] states."""
    per_token = jnp.mean(jnp.square(student.astype(jnp.float32) - teacher), axis=-1)
    return jnp.sum(per_token * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def attention_mse(student: jax.Array, teacher: jax.Array, weights: jax.Array) -> jax.Array:
    """MSE of [B, N, T, T] attention scores over real (query, key) pairs, per head.

    `weights` [B, T] masks queries and keys alike; heads are averaged first
    when the student and teacher have different head counts.
    """
    student, teacher = student.astype(jnp.float32), teacher.astype(jnp.float32)
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(1, keepdims=True), teacher.mean(1, keepdims=True)
    pair = weights[:, None, :, None] * (weights > 0)[:, None, None, :]
    per_pair = jnp.mean(jnp.square(student - teacher), axis=1, keepdims=True)
    return jnp.sum(per_pair * pair) / jnp.maximum(jnp.sum(pair), 1.0)


def prediction_loss(student_logits, teacher_logits, weights, temperature, regression):
    """Soft cross-entropy of tempered distributions (MSE for regression), weighted mean."""
    s = student_logits.astype(jnp.float32)
    t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
    if regression:
        per_example = jnp.mean(jnp.square(s - t), axis=-1)
    else:
        per_example = soft_cross_entropy(s, t, temperature)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def init_projection(rng, student_width: int, teacher_width: int) -> dict:
    kernel = 0.02 * jax.random.normal(rng, (student_width, teacher_width), jnp.float32)
    return {"kernel": kernel, "bias": jnp.zeros((teacher_width,), jnp.float32)}


def project(x: jax.Array, params) -> jax.Array:
    """`x W + b` with the method's projection, or `x` when there is none."""
    projection = (params or {}).get(PARAMS_KEY, {}).get("projection")
    if projection is None:
        return x
    return x @ projection["kernel"] + projection["bias"]


@dataclasses.dataclass(frozen=True)
class TransformerDistillation(Method):
    """Base of TinyBERT and BERT-EMD: projection params, stages, prediction KD."""

    student_hidden: int = 384
    teacher_hidden: int = 384
    stage: str = "both"
    split_step: int = 0
    temperature: float = 1.0
    regression: bool = False

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"unknown distillation stage {self.stage!r}; known: {STAGES}")

    @classmethod
    def from_config(cls, block, context):
        if context.teacher is None:
            raise ValueError(f"{block.kind} distillation needs config.teacher")
        derived = dict(
            student_hidden=context.model.hidden_size,
            teacher_hidden=context.teacher.hidden_size,
            student_layers=context.model.num_hidden_layers,
            teacher_layers=context.teacher.num_hidden_layers,
            split_step=context.steps(block.split_fraction),
            regression=context.regression,
        )
        return cls(**fields_from(cls, block, **derived))

    def init(self, params, rngs):
        if self.student_hidden != self.teacher_hidden:
            projection = init_projection(rngs["params"], self.student_hidden, self.teacher_hidden)
            params = {**params, PARAMS_KEY: {"projection": projection}}
        return params, {}

    def present(self, params, state, step, train):
        return {k: v for k, v in params.items() if k != PARAMS_KEY}, Interventions()

    def finalize(self, params, state, config):
        return {k: v for k, v in params.items() if k != PARAMS_KEY}, config

    def stage_weights(self, step) -> tuple[jax.Array, jax.Array]:
        """(intermediate, prediction) loss weights at `step`."""
        if self.stage != "both":
            on = self.stage == "intermediate"
            return jnp.float32(on), jnp.float32(not on)
        first = (jnp.asarray(step) < self.split_step).astype(jnp.float32)
        return first, 1.0 - first

    def intermediate_loss(self, student, teacher, batch, state, params):
        raise NotImplementedError

    def loss(self, task_loss, student, teacher, batch, params, state, step):
        """Replaces the task loss: TinyBERT learns from the teacher only."""
        if teacher is None:
            raise ValueError("transformer distillation needs a teacher (config.teacher)")
        teacher = jax.tree_util.tree_map(jax.lax.stop_gradient, teacher)
        w_inter, w_pred = self.stage_weights(step)
        inter, metrics = self.intermediate_loss(student, teacher, batch, state, params)
        pred = prediction_loss(
            student[0]["logits"],
            teacher[0]["logits"],
            batch["weights"],
            self.temperature,
            self.regression,
        )
        return w_inter * inter + w_pred * pred, {**metrics, "prediction_loss": pred}


@dataclasses.dataclass(frozen=True)
class TinyBertDistillation(TransformerDistillation):
    """TinyBERT with a fixed layer map (`layer_map` kind, see layer_maps.py)."""

    student_layers: int = 3
    teacher_layers: int = 6
    layer_map: str = "uniform"
    explicit_map: tuple[int, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        _ = self.pairs  # validates the map

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        return layer_map(
            self.layer_map, self.student_layers, self.teacher_layers, self.explicit_map
        )

    @property
    def name(self) -> str:
        return f"distill_tinybert_{self.layer_map}"

    @property
    def intermediates(self):
        return ("embeddings", "hidden", "attn_scores")

    def intermediate_loss(self, student, teacher, batch, state, params):
        s, t = student[1], teacher[1]
        weights = token_weights(batch)
        embedding = hidden_mse(project(s["embeddings"], params), t["embeddings"], weights)
        attention = hidden = jnp.zeros((), jnp.float32)
        for j, i in self.pairs:
            attention += attention_mse(s[f"attn_scores/{j}"], t[f"attn_scores/{i}"], weights)
            hidden += hidden_mse(project(s[f"hidden/{j}"], params), t[f"hidden/{i}"], weights)
        metrics = {
            "embedding_loss": embedding,
            "attention_loss": attention,
            "hidden_loss": hidden,
        }
        return embedding + attention + hidden, metrics

    def report(self, params, state):
        return {"layer_map": [[j, i] for j, i in self.pairs]}
