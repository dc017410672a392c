"""BERT-of-Theseus (Xu et al. 2020): progressive module replacing.

The fine-tuned predecessor's `num_layers` layers form `successors` modules of
k = num_layers / successors consecutive layers. Each training step, each
module independently runs its single successor layer with probability p (else
its k frozen predecessor layers): the model's `replace` intervention, sampled
from the method state's key and the step, so the step stays pure. p follows a constant or a
linear curriculum (p = min(1, rate + slope * step)). Successors start as copies
of predecessor layers (`init_from`: "first" copies layers 0..n-1, as the
authors' code; "module" copies each module's first layer). Evaluation and
`finalize` use the successors only: `finalize` renumbers them into a standalone
`successors`-layer model.

Only the successors train by default (`trainable`, regexes over param paths):
the predecessor layers, embeddings and head stay as fine-tuned.
"""

import dataclasses

import jax
import jax.numpy as jnp

from bertjax.models import layout
from bertjax.models.interventions import Interventions, Replace
from methods.base import Method, fields_from
from methods.bitfit import train_only

SUCCESSOR = r"bert/encoder/successor/.*"


def replace_rate(schedule: str, rate: float, slope: float, step) -> jax.Array:
    """p at `step`: `rate` (constant) or min(1, rate + slope * step) (linear)."""
    if schedule == "constant":
        return jnp.asarray(rate, jnp.float32)
    if schedule == "linear":
        return jnp.minimum(1.0, rate + slope * jnp.asarray(step, jnp.float32))
    raise ValueError(f"unknown replacing schedule {schedule!r}; known: constant, linear")


@dataclasses.dataclass(frozen=True)
class ModuleReplacing(Method):
    num_layers: int = 6
    successors: int = 3
    schedule: str = "constant"
    rate: float = 0.5
    slope: float = 0.0
    init_from: str = "first"
    trainable: tuple[str, ...] = (SUCCESSOR,)
    total_steps: int = 0  # for the report's final replace rate

    def __post_init__(self):
        if self.successors < 1 or self.num_layers % self.successors:
            raise ValueError(
                f"{self.num_layers} layers do not split into {self.successors} modules"
            )
        if self.init_from not in ("first", "module"):
            raise ValueError(f"unknown init_from {self.init_from!r}; known: first, module")
        replace_rate(self.schedule, self.rate, self.slope, 0)  # validates the schedule

    @classmethod
    def from_config(cls, block, context):
        ramp = context.steps(block.ramp_fraction)
        slope = (1.0 - block.rate) / max(ramp, 1) if block.schedule == "linear" else 0.0
        layers = context.model.num_hidden_layers
        steps = context.total_steps
        return cls(**fields_from(cls, block, num_layers=layers, slope=slope, total_steps=steps))

    @property
    def name(self) -> str:
        return f"theseus_{self.schedule}"

    @property
    def modules(self) -> tuple[tuple[int, ...], ...]:
        k = self.num_layers // self.successors
        return tuple(tuple(range(m * k, (m + 1) * k)) for m in range(self.successors))

    def source_layer(self, m: int) -> int:
        return m if self.init_from == "first" else self.modules[m][0]

    def init(self, params, rngs):
        layers = params["bert"]["encoder"]["layer"]
        successors = {
            str(m): jax.tree_util.tree_map(jnp.array, layers[str(self.source_layer(m))])
            for m in range(self.successors)
        }
        encoder = {**params["bert"]["encoder"], "successor": successors}
        params = {**params, "bert": {**params["bert"], "encoder": encoder}}
        return params, {"key": jax.random.key_data(rngs["state"])}

    def rate_at(self, step) -> jax.Array:
        return replace_rate(self.schedule, self.rate, self.slope, step)

    def present(self, params, state, step, train):
        if train:
            key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), step)
            gate = jax.random.bernoulli(key, self.rate_at(step), (self.successors,))
        else:  # evaluation: the compressed model, successors only
            gate = jnp.ones((self.successors,), bool)
        return params, Interventions(replace=Replace(self.modules, gate))

    def wrap_optimizer(self, tx, params):
        return train_only(tx, self.trainable)

    def finalize(self, params, state, config):
        """The successor-only model: successors become layers 0..n-1."""
        params = layout.select_layers(params, range(self.successors), stack="successor")
        return params, config.with_layers([self.source_layer(m) for m in range(self.successors)])

    def report(self, params, state):
        return {
            "successor_layers": self.successors,
            "final_replace_rate": float(self.rate_at(self.total_steps)),
        }
