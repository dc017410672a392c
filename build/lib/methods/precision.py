"""Mixed-precision compute as a method: bfloat16 matmuls, float32 master weights.

`config.precision = ConfigDict(compute="bf16")` makes every forward of the run (train
steps, evaluation, calibration) multiply in bfloat16 with float32 accumulation, the
Dense products' backward too (`bertjax/models/bfloat16.py`); params, gradients, the
optimizer, LayerNorm, softmax and the loss stay float32. On CPUs with AVX-512 BF16 or
AMX this is the fastest arithmetic XLA:CPU has (benchmarks/results/runtime.md). It sets the
`matmul` intervention, so it cannot be combined with quantization (a clear error).
"""

import dataclasses

from bertjax.models.interventions import COMPUTE, compute_interventions
from methods.base import Context, Method, fields_from


@dataclasses.dataclass(frozen=True)
class Precision(Method):
    compute: str = "bf16"  # a name in `interventions.COMPUTE`

    def __post_init__(self):
        if self.compute not in COMPUTE:
            raise ValueError(
                f"precision.compute must be one of {', '.join(COMPUTE)}, got {self.compute!r}"
            )

    @classmethod
    def from_config(cls, block, context: Context) -> "Precision | None":
        """The method, or None (off) for "fp32", the model's default arithmetic."""
        method = cls(**fields_from(cls, block))
        return None if method.compute == "fp32" else method

    @property
    def name(self) -> str:
        return self.compute

    def present(self, params, state, step, train):
        return params, compute_interventions(self.compute)
