"""Early exit: an off-ramp after every layer, so easy examples stop early.

DeeBERT (Xin et al. 2020): each layer i < L-1 gets its own exit head — a pooler
(tanh Dense of [CLS], initialised from the model's final pooler) and a classifier.
Training is two-staged: stage 1 is plain fine-tuning (start this method from a
fine-tuned model), stage 2 trains only the exit heads on the sum of their losses with
the backbone frozen (`wrap_optimizer`; the hidden states are held under
`stop_gradient`, so no backward runs through the backbone).
PABEE (Zhou et al. 2020): the exit heads share the model's pooler; each layer has its
own classifier; everything trains jointly on `sum_j j * L_j / sum_j j` over the L
layers (layer j 1-based; the last layer's loss is the task loss of the model's own
head).

Pooling (our addition, `pooling="mean"`): the papers' heads read [CLS], but MiniLM's
[CLS] carries the sentence only from layer 4 of 6 on (a ridge probe on SST-2 dev: [CLS]
0.51-0.55 at layers 1-3, the mean of the real tokens 0.74-0.76). A mean-pooled exit head
reads the masked mean of its layer's tokens through its own pooler (a copy of the
model's: that one was trained on [CLS]), in both strategies.

The exit heads are method-owned params `params["exit_heads"][str(i)]`
(`{"pooler": {kernel, bias}}` for DeeBERT, `{"mean_pooler": ...}` for mean pooling,
`{"classifier": {kernel, bias}}`), hidden
from the model in `present` and exported beside it (`exit_heads.{i}.*` keys of
model.safetensors; `bertjax.inference.early_exit` loads and runs them). When to
exit is `methods/dynamic/exits.py`; at the end of a run `eval_report` scores every
threshold / patience of the sweep from every layer's logits (no retraining).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models.interventions import Interventions
from methods import losses
from methods.base import Method, fields_from
from methods.bitfit import train_only
from methods.dynamic import exits

EXITS = "exit_heads"
STRATEGIES = ("deebert", "pabee")
POOLINGS = ("cls", "mean")


def split(params: dict) -> tuple[dict, dict | None]:
    """`(model params, exit heads)`."""
    return {k: v for k, v in params.items() if k != EXITS}, params.get(EXITS)


def _dense(params: dict, x: jax.Array) -> jax.Array:
    return x @ params["kernel"].astype(jnp.float32) + params["bias"].astype(jnp.float32)


def masked_mean(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """The mean [B, H] of the real tokens (`mask` [B, T] nonzero) of `hidden` [B, T, H]."""
    weights = (mask > 0).astype(jnp.float32)[..., None]
    total = jnp.sum(hidden.astype(jnp.float32) * weights, axis=1)
    return total / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def exit_logits(
    params: dict, layer: int, hidden: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """Exit head `layer`'s logits [B, C] from that layer's hidden states [B, T, H]:
    classifier(tanh(pooler(features))), the features [CLS] through the head's own pooler
    (DeeBERT) or the model's (PABEE), or the masked token mean through the head's
    `mean_pooler` (then `mask` [B, T] is needed)."""
    heads = params[EXITS][str(layer)]
    if "mean_pooler" in heads:
        if mask is None:
            raise ValueError("a mean-pooled exit head needs the attention mask")
        pooler, features = heads["mean_pooler"], masked_mean(hidden, mask)
    else:
        pooler = heads["pooler"] if "pooler" in heads else params["bert"]["pooler"]["dense"]
        features = hidden[:, 0].astype(jnp.float32)
    return _dense(heads["classifier"], jnp.tanh(_dense(pooler, features)))


@dataclasses.dataclass(frozen=True)
class EarlyExit(Method):
    strategy: str = "pabee"
    num_layers: int = 2
    regression: bool = False
    # The sweep scored at the end of a run: entropy thresholds (DeeBERT's criterion,
    # classification only) and patiences (PABEE's), whatever the training strategy.
    thresholds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    patiences: tuple[int, ...] = (1, 2, 3, 4, 5)
    delta: float = 0.1  # PABEE's regression patience: |change| < delta counts as the same
    pooling: str = "cls"  # what the exit heads read: [CLS] (the papers) or the token mean

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown early-exit strategy {self.strategy!r}; known: {', '.join(STRATEGIES)}"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(
                f"unknown exit-head pooling {self.pooling!r}; known: {', '.join(POOLINGS)}"
            )
        if self.num_layers < 2:
            raise ValueError(f"early exit needs at least 2 layers, the model has {self.num_layers}")
        for patience in self.patiences:
            exits.Criterion("patience", patience)  # checks the value

    @classmethod
    def from_config(cls, block, context):
        return cls(
            **fields_from(
                cls,
                block,
                num_layers=context.model.num_hidden_layers,
                regression=context.regression,
            )
        )

    @property
    def name(self) -> str:
        suffix = "" if self.pooling == "cls" else f"_{self.pooling}"
        return f"early_exit_{self.strategy}{suffix}"

    @property
    def intermediates(self):
        return ("hidden",)

    def init(self, params, rngs):
        classifier = params["classifier"]
        hidden, outputs = classifier["kernel"].shape
        pooler = params["bert"]["pooler"]["dense"]
        keys = jax.random.split(rngs["params"], self.num_layers - 1)
        heads = {}
        for i in range(self.num_layers - 1):
            kernel = 0.02 * jax.random.normal(keys[i], (hidden, outputs), jnp.float32)
            head = {"classifier": {"kernel": kernel, "bias": jnp.zeros((outputs,), jnp.float32)}}
            if self.pooling == "mean":
                head["mean_pooler"] = jax.tree.map(jnp.array, pooler)  # a copy, its own
            elif self.strategy == "deebert":
                head["pooler"] = jax.tree.map(jnp.array, pooler)  # a copy, trained on its own
            heads[str(i)] = head
        return {**params, EXITS: heads}, {}

    def present(self, params, state, step, train):
        return split(params)[0], Interventions()

    def layer_logits(self, params, inter: dict, mask: jax.Array) -> list[jax.Array]:
        """Exit logits of layers 0 .. L-2 from the collected hidden states (`mask` [B, T]
        the attention mask, which mean-pooled heads read)."""
        missing = [i for i in range(self.num_layers - 1) if f"hidden/{i}" not in inter]
        if missing:
            raise ValueError(f"early exit needs the hidden states of layers {missing}")
        hidden = [inter[f"hidden/{i}"] for i in range(self.num_layers - 1)]
        if self.strategy == "deebert":  # stage 2: the backbone is frozen
            hidden = jax.lax.stop_gradient(hidden)
        return [exit_logits(params, i, h, mask) for i, h in enumerate(hidden)]

    def loss(self, task_loss, student, teacher, batch, params, state, step):
        per_layer = [
            losses.weighted_mean(
                losses.per_example(logits, batch["labels"], self.regression), batch["weights"]
            )
            for logits in self.layer_logits(params, student[1], batch["attention_mask"])
        ]
        metrics = {f"exit_loss/{i}": loss for i, loss in enumerate(per_layer)}
        if self.strategy == "deebert":
            return sum(per_layer), metrics
        weights = np.arange(1, self.num_layers + 1, dtype=np.float32)
        total = sum(w * loss for w, loss in zip(weights, [*per_layer, task_loss], strict=True))
        return total / weights.sum(), metrics

    def wrap_optimizer(self, tx, params):
        if self.strategy == "deebert":  # only method-owned params (the exit heads) train
            return train_only(tx, ())
        return tx

    def report(self, params, state):
        heads = params.get(EXITS, {})
        return {"exit_head_params": int(sum(x.size for x in jax.tree.leaves(heads)))}

    @property
    def has_eval_outputs(self):
        return True

    def eval_outputs(self, params, state, outputs, inter, batch):
        layers = self.layer_logits(params, inter, batch["attention_mask"])
        layers.append(outputs["logits"].astype(jnp.float32))
        return {"layer_logits": jnp.stack(layers, axis=1)}  # [B, L, C]

    def criteria(self) -> list[exits.Criterion]:
        """Every criterion of the sweep (entropy only for classification)."""
        found = [
            exits.Criterion("patience", p, self.regression, self.delta) for p in self.patiences
        ]
        if not self.regression:
            found = [exits.Criterion("entropy", t) for t in self.thresholds] + found
        return found

    def eval_report(self, extras, score):
        layer_logits = np.asarray(extras["layer_logits"])
        last = layer_logits[:, -1]
        points = []
        for criterion in self.criteria():
            exit_at = exits.exit_layers(criterion, layer_logits)
            logits = exits.logits_at_exit(layer_logits, exit_at)
            if self.regression:
                agreement = float(np.mean(np.abs(logits[:, 0] - last[:, 0]) < self.delta))
            else:
                agreement = float(np.mean(logits.argmax(-1) == last.argmax(-1)))
            mean_layers = float(np.mean(exit_at + 1))
            points.append(
                {
                    "criterion": criterion.kind,
                    "value": criterion.value,
                    "metrics": score(logits),
                    "mean_exit_layer": mean_layers,
                    "exit_share": np.round(
                        np.bincount(exit_at, minlength=self.num_layers) / len(exit_at), 4
                    ).tolist(),
                    "layer_speedup": self.num_layers / mean_layers,
                    "agreement_with_last_layer": agreement,
                }
            )
        layers = [score(layer_logits[:, i]) for i in range(self.num_layers)]
        return {
            "early_exit": {
                "strategy": self.strategy,
                "pooling": self.pooling,
                "layer_metrics": layers,
                "sweep": points,
            }
        }
