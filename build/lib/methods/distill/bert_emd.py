"""BERT-EMD (Li et al. 2020): many-to-many layer mapping by Earth Mover's Distance.

Every student layer may learn from every teacher layer. For attention and for
hidden states separately, the ground distance D[i, j] is the TinyBERT loss
between teacher layer i and student layer j; the flow F solving the EMD
transport with the layers' weights as mass (methods/distill/emd.py, solved in
the jitted step) gives the loss sum(F * D) / sum(F). After each step the layer
weights move toward the layers that transport cheaply (the paper's cost
attention, `emd.update_weights`: softmax of the inverse-cost scores at
`weight_temperature`, or plain normalisation when it is 0, the default here: with a
softmax at T=1 the weights collapsed onto one layer within 100 steps on MRPC, see
benchmarks/results/distillation.md); they live in the method state, and the flows
and weights are returned as step metrics (`emd/...`) so they can be logged.
The embedding-layer MSE and the prediction-layer KD are TinyBERT's.
"""

import dataclasses

import jax.numpy as jnp

from methods.distill import emd
from methods.distill.tinybert import (
    TransformerDistillation,
    attention_mse,
    hidden_mse,
    project,
    token_weights,
)

KINDS = ("attention", "hidden")


@dataclasses.dataclass(frozen=True)
class EmdDistillation(TransformerDistillation):
    student_layers: int = 3
    teacher_layers: int = 6
    weight_temperature: float = 0.0
    update_weights: bool = True

    @property
    def name(self) -> str:
        return "distill_emd"

    @property
    def intermediates(self):
        return ("embeddings", "hidden", "attn_scores")

    def init(self, params, rngs):
        m, n = self.teacher_layers, self.student_layers
        weights = {
            kind: {
                "teacher": jnp.full((m,), 1.0 / m, jnp.float32),
                "student": jnp.full((n,), 1.0 / n, jnp.float32),
            }
            for kind in KINDS
        }
        params, state = super().init(params, rngs)
        return params, {**state, "weights": weights}

    def costs(self, student, teacher, batch, params) -> dict[str, jnp.ndarray]:
        """Ground distances [M, N] for attention and hidden states."""
        s, t = student[1], teacher[1]
        weights = token_weights(batch)
        rows = {kind: [] for kind in KINDS}
        for i in range(self.teacher_layers):
            rows["attention"].append(
                jnp.stack(
                    [
                        attention_mse(s[f"attn_scores/{j}"], t[f"attn_scores/{i}"], weights)
                        for j in range(self.student_layers)
                    ]
                )
            )
            rows["hidden"].append(
                jnp.stack(
                    [
                        hidden_mse(project(s[f"hidden/{j}"], params), t[f"hidden/{i}"], weights)
                        for j in range(self.student_layers)
                    ]
                )
            )
        return {kind: jnp.stack(value) for kind, value in rows.items()}

    def intermediate_loss(self, student, teacher, batch, state, params):
        weights = token_weights(batch)
        embedding = hidden_mse(
            project(student[1]["embeddings"], params), teacher[1]["embeddings"], weights
        )
        total, metrics = embedding, {"embedding_loss": embedding}
        for kind, cost in self.costs(student, teacher, batch, params).items():
            mass = state["weights"][kind]
            value, flow = emd.emd_loss(cost, mass["teacher"], mass["student"])
            total = total + value
            metrics[f"{kind}_loss"] = value
            metrics[f"emd/{kind}_flow"] = flow
            metrics[f"emd/{kind}_cost"] = cost
        return total, metrics

    def update(self, state, params, grads, aux, step):
        """Moves the layer weights toward cheap transport (the step's flows and costs)."""
        metrics = aux.get("metrics", {})
        if grads is None or not self.update_weights or "emd/hidden_flow" not in metrics:
            return state
        new = {}
        for kind in KINDS:
            mass = state["weights"][kind]
            teacher, student = emd.update_weights(
                metrics[f"emd/{kind}_flow"],
                metrics[f"emd/{kind}_cost"],
                mass["teacher"],
                mass["student"],
                self.weight_temperature if self.weight_temperature > 0 else None,
            )
            new[kind] = {"teacher": teacher, "student": student}
        return {**state, "weights": new}

    def report(self, params, state):
        return {
            f"emd_{kind}_weights": {
                side: [round(float(w), 4) for w in state["weights"][kind][side]]
                for side in ("teacher", "student")
            }
            for kind in KINDS
        }
