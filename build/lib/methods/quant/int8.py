"""Real int8 matmuls: int8 x int8 -> int32 `dot_general`, dynamic symmetric scales.

Fake-quant (`fake_quant.py`) simulates int8 in float; this runs it. Each
operand is scaled onto [-127, 127] by its own absolute maximum over the
contracted dimensions (one scale per row of the left operand, per column of
the right one: a Dense kernel gets per-output-channel scales, an activation
per-token scales, as ONNX Runtime's dynamic int8 and LLM.int8's vector-wise
quantization do), rounded to int8, multiplied with int32 accumulation, and
the int32 result rescaled to float by the outer product of the two scales.
XLA:CPU lowers the int8 product to oneDNN/YNNPACK kernels (VNNI/AMX where
the CPU has them), which is where the speed comes from.

Inference only: rounding has no useful gradient. `int8_dot_general` (the
`INT8_PRODUCTS` intervention) quantizes float weights on every call; `Int8Matmul`,
the method, instead stores them in int8 once (`methods/quant/storage.py`:
`{qvalue, scale}` leaves, the same int8 values and scales) and evaluates and exports
that: the run's `export/` is the int8 artifact, read back by `load_pretrained`.
Activations are quantized per token at run time ("dynamic"), or ("static") by one
per-tensor scale for each Dense input, calibrated on a few training batches and
stored beside the kernel (`input_scale`). The attention products q.k and probs.v
stay float unless `attention=True`: on MiniLM-L6 (batch 32 x 128, 2 busy CPU cores)
int8 attention products were ~5 % slower and no more accurate. During the run, the
evaluation step quantizes the float training params inside the jitted step (the same
numbers as the exported artifact, which is quantized once in `finalize`).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models.interventions import (
    DENSE_SITE,
    Interventions,
    Matmul,
    matmul_sites,
    site_of,
    sites_in,
)
from methods import selectors
from methods.base import Method
from methods.quant import calibration as calibration_lib
from methods.quant.fake_quant import QuantSpec, quantize, scale_and_zero_point

INT8 = QuantSpec(8, symmetric=True)  # the fake-quant grid: [-127, 127], step absmax / 127


def quantize_along(x: jax.Array, axes: tuple[int, ...]):
    """`(x_int8, scale)`: x ~= x_int8 * scale, one scale per slice over `axes` (kept as 1s)."""
    x = x.astype(jnp.float32)
    absmax = jnp.max(jnp.abs(x), axis=axes, keepdims=True)
    scale, zero_point = scale_and_zero_point(x, INT8, lo=-absmax, hi=absmax)
    return quantize(x, scale, zero_point, INT8).astype(jnp.int8), scale


def int8_dot_general(
    lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs
):
    """A `jax.lax.dot_general` replacement computing the product in int8 (see module doc).

    Returns float32 (or `preferred_element_type` when it is a float type).
    """
    del precision, kwargs  # the int8 product has one precision
    (lhs_contract, rhs_contract), _ = dimension_numbers
    lhs_q, lhs_scale = quantize_along(lhs, tuple(lhs_contract))
    rhs_q, rhs_scale = quantize_along(rhs, tuple(rhs_contract))
    acc = jax.lax.dot_general(lhs_q, rhs_q, dimension_numbers, preferred_element_type=jnp.int32)
    # The scales keep the contracted dims as size 1, so the same dot_general lays
    # their outer product out exactly like the output.
    scale = jax.lax.dot_general(lhs_scale, rhs_scale, dimension_numbers)
    out_type = preferred_element_type or jnp.float32
    if not jnp.issubdtype(out_type, jnp.floating):
        out_type = jnp.float32
    return (acc.astype(jnp.float32) * scale).astype(out_type)


class Int8Products(Matmul):
    """The matmul intervention running every product in int8 (`int8_dot_general`)."""

    def dot_general(self, lhs, rhs, dimension_numbers, precision=None, **kwargs):
        return int8_dot_general(lhs, rhs, dimension_numbers, precision=precision, **kwargs)


INT8_PRODUCTS = Int8Products()


ACTIVATIONS = ("dynamic", "static")


class DenseInputRanges(Matmul):
    """Float matmuls that record each Dense input's range statistic (static calibration)."""

    records = True

    def __init__(self, method: "Int8Matmul"):
        self.method = method

    def operand(self, x, site):
        if not site.endswith(f"/{DENSE_SITE}"):
            return x, None
        method = self.method
        statistic = calibration_lib.batch_range(
            jax.lax.stop_gradient(x), method.calibration, INT8, method.percentile
        )
        return x, statistic


@dataclasses.dataclass(frozen=True)
class Int8Matmul(Method):
    """Evaluates and exports the model with its weights stored in int8 (see the module doc).

    Training steps stay float (no intervention), so with `train.num_epochs = 0` this
    is post-training quantization W8A8 that really runs in int8. `activations`:
    "dynamic" (per token) or "static" (per tensor, `calibration` over the first
    `num_calibration_batches` batches). `attention`: also run q.k and probs.v in int8
    (dynamic `int8_dot_general`); the stored artifact runs them in float.
    """

    activations: str = "dynamic"
    attention: bool = False
    calibration: str = "minmax"
    num_calibration_batches: int = 0
    percentile: float = 99.99
    select: tuple[str, ...] = ()  # regexes of the stored-int8 leaves; () = storage's default

    def __post_init__(self):
        if self.activations not in ACTIVATIONS:
            raise ValueError(f"unknown int8 activations {self.activations!r}: {ACTIVATIONS}")
        static = self.activations == "static"
        if static and self.calibration not in calibration_lib.CALIBRATIONS:
            raise ValueError(
                f"static int8 activations need a calibration in {calibration_lib.CALIBRATIONS}"
            )
        if static != (self.num_calibration_batches > 0):
            raise ValueError(
                "static int8 activations need calibration batches >= 1 (and dynamic ones "
                f"none); got {self.activations} with {self.num_calibration_batches} batches"
            )

    @property
    def name(self) -> str:
        return f"quant_int8_{self.activations}"

    @property
    def static(self) -> bool:
        return self.activations == "static"

    @property
    def calibration_batches(self) -> int:
        return self.num_calibration_batches

    def _select(self):
        from methods.quant import storage  # storage imports this module

        return self.select or storage.DEFAULT_SELECT

    def init(self, params, rngs):
        if not self.static:
            return params, {}

        sites = tuple(s for s in matmul_sites(params) if s.endswith(f"/{DENSE_SITE}"))
        return params, calibration_lib.empty_site_ranges(sites)

    def input_scales(self, state) -> dict:
        """Static scale of each calibrated Dense input, by module path: absmax / 127."""
        scales = {}
        for site in sites_in(state, "count"):
            entry = site_of(state, site)
            absmax = jnp.maximum(jnp.abs(entry["lo"]), jnp.abs(entry["hi"]))
            scale, _ = scale_and_zero_point(absmax, INT8, lo=-absmax, hi=absmax)
            scales[site.rpartition("/")[0]] = scale
        return scales

    def quantized(self, params, state):
        """`params` stored in int8 (with the calibrated input scales, when static)."""
        from methods.quant import storage  # storage imports this module

        scales = {}
        if self.static:
            quantizable = {
                path.rpartition("/")[0]
                for path, on in zip(
                    selectors.param_paths(params),
                    jax.tree_util.tree_leaves(selectors.select(params, self._select())),
                    strict=True,
                )
                if on and path.endswith("/kernel")
            }
            scales = {k: v for k, v in self.input_scales(state).items() if k in quantizable}
        return storage.quantize_params(params, self._select(), scales)

    def present(self, params, state, step, train):
        if train:
            return params, Interventions(matmul=DenseInputRanges(self) if self.static else None)
        return self.quantized(params, state), Interventions(
            matmul=INT8_PRODUCTS if self.attention else None
        )

    def update(self, state, params, grads, aux, step):
        """Static: folds the Dense inputs' batch statistics (`aux["stats"]`) into the state."""
        if not self.static:
            return state
        return calibration_lib.fold_sites(
            state,
            aux.get("stats", {}),
            calibration=self.calibration,
            calibration_batches=self.num_calibration_batches,
            ema_decay=None,
        )

    def finalize(self, params, state, config):
        """The params stored in int8, as evaluated: what the run exports."""
        if self.static:
            counts = {s: int(site_of(state, s)["count"]) for s in sites_in(state, "count")}
            unseen = sorted(s for s, n in counts.items() if n == 0)
            if unseen:
                raise ValueError(f"static int8: Dense inputs never calibrated: {unseen[:3]}...")
        return jax.device_get(self.quantized(params, state)), config

    def report(self, params, state):
        report = {
            "int8_matmuls": True,
            "int8_storage": True,
            "int8_activations": self.activations,
            "int8_attention": self.attention,
        }
        if self.static:
            report["calibration"] = self.calibration
            report["calibration_batches"] = self.num_calibration_batches
            counts = [site_of(state, s)["count"] for s in sites_in(state, "count")]
            report["activation_sites"] = int(np.sum(np.asarray(counts) > 0))
        return report
