"""Activation fake-quantization through the model's matmul intervention.

Every matmul of the model (each Dense layer and both attention products) calls
`Matmul.operand` on its activation operands (`bertjax/models/interventions.py`):
the input of each Dense (a Dense kernel is a weight, left to
`WeightQuantization`) and both operands of q.k and probs.v. Each operand is a
site, named by the module's path and the operand (`.../attention/self/query/input`,
`.../attention/self/qk_key`, ...), so a site is the same tensor in every step,
whatever ran before it, also under Theseus's `nn.cond`.

Ranges are either dynamic (each tensor's own min/max at run time, as ONNX
Runtime's dynamic int8) or static, one `[lo, hi]` per site in the method state:
  ema          QAT with Q8BERT's moving averages of each site's min/max
  calibration  PTQ: ranges from N forward-only batches (minmax, percentile,
               mse; see `methods.quant.calibration`), frozen afterwards
(both: calibrate first, then follow the EMA while fine-tuning).
With static ranges, each operand's batch statistic is data: the model writes it
into the `quant_stats` collection that `apply` returns, and `update` folds the
sites that ran into the state.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models.interventions import (
    Interventions,
    Matmul,
    matmul_sites,
    site_of,
    sites_in,
)
from methods.base import Method
from methods.quant import calibration as calibration_lib
from methods.quant.fake_quant import QuantSpec, fake_quant
from methods.ste import straight_through

RANGES = ("dynamic", "ema")


class DynamicRanges(Matmul):
    """Fake-quantizes each activation operand with its own min/max (straight through)."""

    def __init__(self, spec: QuantSpec):
        self.spec = spec

    def operand(self, x, site):
        return straight_through(x, fake_quant(x, self.spec)), None


class StaticRanges(Matmul):
    """Fake-quantizes each operand with its site's range from the method state.

    A site's forward range is its state range once it has seen a batch, else the
    operand's own min/max; while the site calibrates the operand passes
    unquantized, so calibration observes the float activations (as PTQ
    observers do). Returns each operand's batch statistic (recorded by the model).
    """

    records = True

    def __init__(self, method: "ActivationQuantization", ranges: dict):
        self.method = method
        self.ranges = ranges  # the method state: {lo, hi, count} per site, by module path

    def operand(self, x, site):
        entry = site_of(self.ranges, site)
        if entry is None:
            raise ValueError(
                f"activation site {site!r} is not in the method state: build the state "
                "from this model's params (ActivationQuantization.init)"
            )
        method, batches = self.method, self.method.num_calibration_batches
        count = entry["count"]
        constant = jax.lax.stop_gradient(x)
        own_lo, own_hi = calibration_lib.minmax_range(constant)
        lo = jnp.where(count > 0, entry["lo"], own_lo)
        hi = jnp.where(count > 0, entry["hi"], own_hi)
        out = straight_through(x, fake_quant(x, method.spec, lo, hi))
        if not batches:
            return out, (own_lo, own_hi)
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

        return out, jax.lax.cond(calibrating, calibrate, afterwards, constant)


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

    @property
    def calibration_batches(self) -> int:
        return self.num_calibration_batches

    def init(self, params, rngs):
        if not self.static:
            return params, {}

        return params, calibration_lib.empty_site_ranges(matmul_sites(params))

    def present(self, params, state, step, train):
        matmul = StaticRanges(self, state) if self.static else DynamicRanges(self.spec)
        return params, Interventions(matmul=matmul)

    def update(self, state, params, grads, aux, step):
        """Folds in the statistics of the sites that ran (`aux["stats"]`, by site)."""
        if not self.static:
            return state
        return calibration_lib.fold_sites(
            state,
            aux.get("stats", {}),
            calibration=self.calibration,
            calibration_batches=self.num_calibration_batches,
            ema_decay=self.ema_decay if self.ranges == "ema" else None,
        )

    def report(self, params, state):
        ranges = "ema" if self.ranges == "ema" else "calibrated" if self.calibration else "dynamic"
        report = {"activation_bits": self.spec.bits, "activation_ranges": ranges}
        if self.calibration:
            report["calibration"] = self.calibration
            report["calibration_batches"] = self.num_calibration_batches
        if self.static and state:
            counts = [site_of(state, site)["count"] for site in sites_in(state, "count")]
            report["activation_sites"] = int(np.sum(np.asarray(counts) > 0))
        return report
