"""BERT-of-Theseus (Xu et al. 2020): progressive module replacing.

The fine-tuned predecessor's `num_layers` layers form `num_successors` modules of
k = num_layers / num_successors consecutive layers. Each training step, each
module independently runs its single successor layer with probability p (else
its k frozen predecessor layers): the model's `replace` override, sampled from
the method state's key, so the step stays pure. p follows a constant or a
linear curriculum (p = min(1, rate + slope * step)). Successors start as copies
of predecessor layers (`init_from`: "first" copies layers 0..n-1, as the
authors' code; "module" copies each module's first layer). Evaluation and
`finalize` use the successors only: `finalize` renumbers them into a standalone
`num_successors`-layer model.

Only the successors train by default (`trainable`, regexes over param paths):
the predecessor layers, embeddings and head stay as fine-tuned.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from methods.base import Method
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
    num_successors: int = 3
    schedule: str = "constant"
    rate: float = 0.5
    slope: float = 0.0
    init_from: str = "first"
    trainable: tuple[str, ...] = (SUCCESSOR,)

    def __post_init__(self):
        if self.num_successors < 1 or self.num_layers % self.num_successors:
            raise ValueError(
                f"{self.num_layers} layers do not split into {self.num_successors} modules"
            )
        if self.init_from not in ("first", "module"):
            raise ValueError(f"unknown init_from {self.init_from!r}; known: first, module")
        replace_rate(self.schedule, self.rate, self.slope, 0)  # validates the schedule

    @property
    def modules(self) -> tuple[tuple[int, ...], ...]:
        k = self.num_layers // self.num_successors
        return tuple(tuple(range(m * k, (m + 1) * k)) for m in range(self.num_successors))

    def source_layer(self, m: int) -> int:
        return m if self.init_from == "first" else self.modules[m][0]

    def init_params(self, params, rng):
        layers = params["bert"]["encoder"]["layer"]
        successors = {
            str(m): jax.tree_util.tree_map(jnp.array, layers[str(self.source_layer(m))])
            for m in range(self.num_successors)
        }
        encoder = {**params["bert"]["encoder"], "successor": successors}
        return {**params, "bert": {**params["bert"], "encoder": encoder}}

    def init(self, params, rng):
        return {"step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(rng)}

    def rate_at(self, step) -> jax.Array:
        return replace_rate(self.schedule, self.rate, self.slope, step)

    def overrides(self, state):
        key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
        gate = jax.random.bernoulli(key, self.rate_at(state["step"]), (self.num_successors,))
        return {"replace": (self.modules, gate)}

    def eval_overrides(self, state):
        return {"replace": (self.modules, jnp.ones((self.num_successors,), bool))}

    def update(self, params, grads, state, step):
        return {**state, "step": jnp.asarray(step, jnp.int32)}

    def wrap_optimizer(self, tx, params):
        return train_only(tx, self.trainable)

    def finalize(self, params, state, config):
        """The successor-only model: successors become layers 0..n-1."""
        encoder = dict(params["bert"]["encoder"])
        successors = encoder.pop("successor")
        encoder["layer"] = {str(m): successors[str(m)] for m in range(self.num_successors)}
        params = {**params, "bert": {**params["bert"], "encoder": encoder}}
        sources = [self.source_layer(m) for m in range(self.num_successors)]
        per_layer = {}
        for field in ("pruned_heads", "intermediate_sizes"):
            value = getattr(config, field, None)
            if value:
                per_layer[field] = tuple(value[i] for i in sources)
        return params, dataclasses.replace(
            config, num_hidden_layers=self.num_successors, **per_layer
        )

    def report(self, params, state):
        return {
            "successor_layers": self.num_successors,
            "final_replace_rate": float(np.asarray(self.rate_at(state["step"]))),
        }
