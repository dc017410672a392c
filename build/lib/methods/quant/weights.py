"""Weight fake-quantization (QAT of weights, or PTQ of weights with no training)."""

import dataclasses

import jax

from bertjax.models.interventions import Interventions
from methods import selectors
from methods.base import Method
from methods.quant.fake_quant import QuantSpec, fake_quant
from methods.ste import straight_through

# The encoder's layers and Theseus successor layers (`encoder/successor/{m}`: the layers
# a Theseus run keeps), and the pooler.
DENSE_KERNELS = (r"bert/encoder/(layer|successor)/\d+/.*/kernel", r"bert/pooler/dense/kernel")


@dataclasses.dataclass(frozen=True)
class WeightQuantization(Method):
    """The model sees selected weights on a `spec` grid; gradients pass straight through.

    `finalize` writes the dequantized weights, so the exported fp32 model is
    the quantized one; `report` gives the size at the chosen bit width.
    """

    spec: QuantSpec = QuantSpec()
    select: tuple[str, ...] = DENSE_KERNELS

    def _selected(self, params):
        return selectors.select(params, list(self.select))

    @property
    def name(self) -> str:
        return f"quant_weights_w{self.spec.bits}"

    def present(self, params, state, step, train):
        seen = jax.tree_util.tree_map(
            lambda p, on: straight_through(p, fake_quant(p, self.spec)) if on else p,
            params,
            self._selected(params),
        )
        return seen, Interventions()

    def finalize(self, params, state, config):
        return jax.tree_util.tree_map(
            lambda p, on: fake_quant(p, self.spec) if on else p, params, self._selected(params)
        ), config

    def report(self, params, state):
        """Bytes with selected weights at `bits` (+ one fp32 scale per channel or tensor)."""
        total = 0
        for p, on in zip(
            jax.tree_util.tree_leaves(params),
            jax.tree_util.tree_leaves(self._selected(params)),
            strict=True,
        ):
            if on:
                scales = p.shape[self.spec.channel_axis] if self.spec.per_channel else 1
                total += (p.size * self.spec.bits + 7) // 8 + 4 * scales * (
                    1 if self.spec.symmetric else 2
                )
            else:
                total += p.nbytes
        return {"quantized_bytes": int(total), "weight_bits": self.spec.bits}
