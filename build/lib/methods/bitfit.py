"""BitFit (Ben Zaken et al. 2022): train only biases (and the task head).

Implemented as an optimizer partition: frozen leaves get `set_to_zero`
updates and no optimizer state at all; the model and loss are unchanged.
"""

import dataclasses

import jax
import optax

from methods import selectors
from methods.base import Method

# Params outside the model's own trees are method-owned (movement scores, distillation
# projections): freezing the model must not freeze what other methods train.
METHOD_OWNED = r"(?!(bert|classifier|cls)/).*"


def train_labels(params, trainable: tuple[str, ...]):
    """ "train" on leaves whose path matches a `trainable` regex or that a method owns
    (outside `bert/`, `classifier/`, `cls/`), else "freeze"."""
    rules = [(pattern, "train") for pattern in (*trainable, METHOD_OWNED)]
    return selectors.apply_rules(params, rules, default="freeze")


def train_only(tx: optax.GradientTransformation, trainable: tuple[str, ...]):
    """`tx` on the `trainable` leaves; zero updates and no optimizer state elsewhere."""
    return optax.multi_transform(
        {"train": tx, "freeze": optax.set_to_zero()}, lambda p: train_labels(p, trainable)
    )


@dataclasses.dataclass(frozen=True)
class BitFit(Method):
    trainable: tuple[str, ...] = (r".*/bias", r"classifier/.*")

    @property
    def name(self) -> str:
        return "bitfit"

    def labels(self, params):
        return train_labels(params, self.trainable)

    def wrap_optimizer(self, tx, params):
        return train_only(tx, self.trainable)

    def report(self, params, state):
        labels = jax.tree_util.tree_leaves(self.labels(params))
        sizes = [x.size for x in jax.tree_util.tree_leaves(params)]
        trained = sum(n for n, label in zip(sizes, labels, strict=True) if label == "train")
        return {"trainable_params": trained, "trainable_fraction": trained / sum(sizes)}
