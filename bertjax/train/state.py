"""The training state: everything a resumed run needs, as one pytree."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """`params` (the student), `opt_state`, `method_state` (masks, scores,
    calibration of compression methods), `step`, and the base `rng` that is
    folded with `step` for every stochastic op. The optimizer itself is static.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    method_state: Any
    rng: jax.Array
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, seed: int,
               method_state: Any = None) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                   method_state={} if method_state is None else method_state,
                   rng=jax.random.PRNGKey(seed), tx=tx)
