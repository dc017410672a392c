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
    rng_impl: str = flax.struct.field(pytree_node=False, default="threefry2x32")

    def step_rng(self) -> jax.Array:
        """This step's key: the base key folded with `step`."""
        key = jax.random.wrap_key_data(self.rng, impl=self.rng_impl)
        return jax.random.fold_in(key, self.step)

    @classmethod
    def create(
        cls,
        params: Any,
        tx: optax.GradientTransformation,
        seed: int,
        method_state: Any = None,
        rng_impl: str = "threefry2x32",
    ) -> "TrainState":
        """`rng_impl`: "threefry2x32" gives the same random bits on any number of
        devices; "rbg" makes dropout masks cheaper on CPU."""
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            method_state={} if method_state is None else method_state,
            rng=jax.random.key_data(jax.random.key(seed, impl=rng_impl)),
            tx=tx,
            rng_impl=rng_impl,
        )
