"""Activation fake-quantization through the model's injectable `dot_general`.

Every matmul of the model (each Dense layer and both attention products) calls
the injected function; it fake-quantizes the left operand (the activation) and,
for matmuls with batch dimensions (attention: q.k and probs.v, both
activations), the right operand too. A Dense kernel (no batch dimensions) is a
weight and is left to `WeightQuantization`.

Ranges are either dynamic (each tensor's own min/max at run time, as ONNX
Runtime's dynamic int8) or static, one `[lo, hi]` per quantization site kept
in the method state:
  ema          QAT with Q8BERT's moving averages of each site's min/max
  calibration  PTQ: ranges from N forward-only batches (minmax, percentile,
               mse; see `methods.quant.calibration`), frozen afterwards
(both: calibrate first, then follow the EMA while fine-tuning).

Sites are numbered in call order during one trace of the model: operand k of
a trace is the k-th activation quantized, the left operand of a matmul before
its right one. The order is fixed by the model code and the overrides (the
same in training and evaluation, dropout or not), so site k is the same
tensor in every step. The injected function records each site's batch
statistic while it is traced; `observed(overrides)` reads the record back in
the same trace, which is valid because the model uses no lifted transforms
(scan, remat, vmap) that would trace a matmul twice or in another trace.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from methods import selectors
from methods.base import Method
from methods.quant import calibration as calibration_lib
from methods.quant.fake_quant import QuantSpec, fake_quant
from methods.ste import straight_through

RANGES = ("dynamic", "ema")


def quantized_dot_general(spec: QuantSpec, quantize=None):
    """A `jax.lax.dot_general` replacement that fake-quantizes activation operands.

    `quantize(x) -> x` fake-quantizes one operand (default: straight through
    `fake_quant` with the operand's own range); it is called on the left
    operand, then on the right one of a matmul with batch dimensions. The
    returned function keeps it as its `quantize` attribute.
    """
    if quantize is None:

        def quantize(x):
            return straight_through(x, fake_quant(x, spec))

    def dot_general(
        lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs
    ):
        (_, _), (lhs_batch, _) = dimension_numbers
        lhs = quantize(lhs)
        rhs = quantize(rhs) if lhs_batch else rhs
        return jax.lax.dot_general(
            lhs,
            rhs,
            dimension_numbers,
            precision=precision,
            preferred_element_type=preferred_element_type,
            **kwargs,
        )

    dot_general.quantize = quantize
    return dot_general


def max_sites(params) -> int:
    """An upper bound on the activation operands one forward pass quantizes: one per
    Dense kernel (the head's too), plus q, k, probs and v of each attention layer."""
    paths = selectors.param_paths(params)
    kernels = sum(p.endswith("/kernel") for p in paths)
    attentions = sum(p.endswith("attention/self/query/kernel") for p in paths)
    return kernels + 4 * attentions


class SiteRecorder:
    """Fake-quantizes activation operands with static per-site ranges; trace-time only.

    Called on each operand in call order (site k = k-th call). Forward range of
    site k: its state range once it has seen a batch, else the operand's own
    min/max; while the site calibrates the operand passes unquantized, so that
    calibration observes the float activations (as PTQ observers do). Each
    call appends the site's batch statistic to `statistics` (float32 scalars).
    """

    def __init__(self, method: "ActivationQuantization", ranges: dict):
        self.method = method
        self.ranges = ranges
        self.statistics: list[tuple[jax.Array, jax.Array]] = []

    @property
    def num_sites(self) -> int:
        return self.ranges["lo"].shape[0]

    def __call__(self, x: jax.Array) -> jax.Array:
        site = len(self.statistics)
        if site >= self.num_sites:
            raise ValueError(
                f"the model quantizes more than the {self.num_sites} activation sites "
                "sized at init: build the method state from this model's params"
            )
        method, batches = self.method, self.method.num_calibration_batches
        count = self.ranges["count"][site]
        constant = jax.lax.stop_gradient(x)
        own_lo, own_hi = calibration_lib.minmax_range(constant)
        lo = jnp.where(count > 0, self.ranges["lo"][site], own_lo)
        hi = jnp.where(count > 0, self.ranges["hi"][site], own_hi)
        out = straight_through(x, fake_quant(x, method.spec, lo, hi))
        if batches:
            calibrating = count < batches
            out = jnp.where(calibrating, x, out)

            def calibrate(value):
                return calibration_lib.batch_range(
                    value, method.calibration, method.spec, method.percentile
                )

            def afterwards(value):
                if method.ranges == "ema":
                    return calibration_lib.minmax_range(value)
                return jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)  # frozen

            statistic = jax.lax.cond(calibrating, calibrate, afterwards, constant)
        else:
            statistic = (own_lo, own_hi)
        self.statistics.append(statistic)
        return out


@dataclasses.dataclass(frozen=True)
class ActivationQuantization(Method):
    """Fake-quantized activation operands of every matmul (see the module doc).

    `ranges`: "dynamic" or "ema" (Q8BERT; `ema_decay` 0.9999 is nlp-architect's
    Q8BERT default). `calibration`: "" (none), "minmax", "percentile" (at
    `percentile`) or "mse", over the first `num_calibration_batches` batches;
    the train loop feeds them forward-only before training.
    """

    spec: QuantSpec = QuantSpec(8, symmetric=False)
    ranges: str = "dynamic"
    ema_decay: float = 0.9999
    calibration: str = ""
    num_calibration_batches: int = 0
    percentile: float = 99.99

    def __post_init__(self):
        if self.ranges not in RANGES:
            raise ValueError(f"unknown activation ranges {self.ranges!r}; known: {RANGES}")
        if self.calibration not in ("", *calibration_lib.CALIBRATIONS):
            raise ValueError(
                f"unknown calibration {self.calibration!r}; "
                f"known: {calibration_lib.CALIBRATIONS} or '' (none)"
            )
        if bool(self.calibration) != (self.num_calibration_batches > 0):
            raise ValueError(
                f"calibration {self.calibration!r} needs calibration batches >= 1 and "
                f"batches need a calibration; got {self.num_calibration_batches} batches"
            )
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if not 50.0 < self.percentile < 100.0:
            raise ValueError(f"percentile must be in (50, 100), got {self.percentile}")
        if self.static and self.spec.per_channel:
            raise ValueError("static activation ranges are per tensor: per_channel=False")

    @property
    def static(self) -> bool:
        """Whether ranges live in the method state (EMA or calibrated)."""
        return self.ranges == "ema" or bool(self.calibration)

    def init(self, params, rng):
        return calibration_lib.empty_ranges(max_sites(params)) if self.static else {}

    def overrides(self, state):
        quantize = SiteRecorder(self, state) if self.static else None
        return {"dot_general": quantized_dot_general(self.spec, quantize)}

    def observed(self, overrides):
        """`lo`, `hi` [S] and `present` [S] of the sites the traced model quantized."""
        if not self.static:
            return {}
        recorder = getattr(overrides.get("dot_general"), "quantize", None)
        if not isinstance(recorder, SiteRecorder) or recorder.method != self:
            raise ValueError("observed() needs the overrides built by this method's overrides()")
        count, sites = len(recorder.statistics), recorder.num_sites
        padding = [jnp.zeros((sites - count,), jnp.float32)]
        lo = [jnp.stack([lo for lo, _ in recorder.statistics])] if count else []
        hi = [jnp.stack([hi for _, hi in recorder.statistics])] if count else []
        return {
            "lo": jnp.concatenate(lo + padding),
            "hi": jnp.concatenate(hi + padding),
            "present": jnp.asarray(np.arange(sites) < count),
        }

    def observe(self, state, observed):
        if not self.static:
            return state
        return calibration_lib.fold(
            state,
            observed,
            calibration=self.calibration,
            calibration_batches=self.num_calibration_batches,
            ema_decay=self.ema_decay if self.ranges == "ema" else None,
        )

    def calibration_batches(self) -> int:
        return self.num_calibration_batches

    def report(self, params, state):
        ranges = "ema" if self.ranges == "ema" else "calibrated" if self.calibration else "dynamic"
        report = {"activation_bits": self.spec.bits, "activation_ranges": ranges}
        if self.calibration:
            report["calibration"] = self.calibration
            report["calibration_batches"] = self.num_calibration_batches
        if self.static and state:
            report["activation_sites"] = int(np.sum(np.asarray(state["count"]) > 0))
        return report
