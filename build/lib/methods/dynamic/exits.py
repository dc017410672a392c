"""When an example leaves the network: the exit criteria of early-exit BERTs.

  entropy   (DeeBERT, Xin et al. 2020): exit at the first layer whose exit head's
            prediction entropy is below `value` (nats).
  patience  (PABEE, Zhou et al. 2020): exit once the prediction has stayed the same
            for `value` consecutive layers (the argmax; for regression, a change of
            less than `delta`, the paper's 0.1). Patience p exits at layer p at the
            earliest (0-based): the first layer has no predecessor to agree with.
The last layer always exits. `step` is the one rule, applied a layer at a time: the
runtime (bertjax/inference/early_exit.py) calls it after each layer it runs, and
`exit_layers` replays it over every layer's logits to score a threshold without
running the model again (the logits of layer k do not depend on later layers).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("entropy", "patience")


def entropy(logits: jax.Array) -> jax.Array:
    """Entropy (nats) of softmax(logits) over the last axis."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


@dataclasses.dataclass(frozen=True)
class Criterion:
    """An exit rule: `kind` ("entropy" or "patience") at threshold / patience `value`."""

    kind: str
    value: float
    regression: bool = False
    delta: float = 0.1  # PABEE's regression threshold on |change of the score|

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown exit criterion {self.kind!r}; known: {', '.join(KINDS)}")
        if self.kind == "entropy" and self.regression:
            raise ValueError("the entropy criterion needs class probabilities: use patience")
        if self.kind == "patience" and (self.value < 1 or self.value != int(self.value)):
            raise ValueError(f"patience must be an integer >= 1, got {self.value}")

    def init(self, batch: int, outputs: int) -> dict:
        """The per-example carry before the first layer."""
        return {
            "count": jnp.zeros((batch,), jnp.int32),
            "previous": jnp.zeros((batch, outputs), jnp.float32),
        }

    def step(self, carry: dict, logits: jax.Array, layer, value=None):
        """`(carry, exits [B] bool)` after layer `layer` (0-based) gave `logits` [B, C].
        `value` overrides `self.value` (a traced threshold: one executable for a sweep)."""
        value = self.value if value is None else value
        logits = logits.astype(jnp.float32)
        if self.kind == "entropy":
            return carry, entropy(logits) < value
        if self.regression:
            same = jnp.abs(logits[:, 0] - carry["previous"][:, 0]) < self.delta
        else:
            same = jnp.argmax(logits, -1) == jnp.argmax(carry["previous"], -1)
        same = same & (jnp.asarray(layer) > 0)
        count = jnp.where(same, carry["count"] + 1, 0)
        return {"count": count, "previous": logits}, count >= value


def exit_layers(criterion: Criterion, layer_logits) -> np.ndarray:
    """The exit layer [N] (0-based) of each example, from every layer's logits [N, L, C]."""
    layer_logits = jnp.asarray(layer_logits, jnp.float32)
    n, num_layers, outputs = layer_logits.shape
    carry = criterion.init(n, outputs)
    exit_at = np.full(n, num_layers - 1)
    done = np.zeros(n, bool)
    for layer in range(num_layers - 1):
        carry, exits = criterion.step(carry, layer_logits[:, layer], layer)
        exits = np.asarray(exits) & ~done
        exit_at[exits] = layer
        done |= exits
    return exit_at


def logits_at_exit(layer_logits, exit_at: np.ndarray) -> np.ndarray:
    """The logits [N, C] each example leaves with."""
    layer_logits = np.asarray(layer_logits)
    return layer_logits[np.arange(len(exit_at)), exit_at]
