"""AutoTinyBERT's search space, scaled to the teacher: sampling and mutation of `Arch`s.

The paper's KD-mode space (Yin et al. 2021, Table 1) bounded by our 6-layer, 384-wide
teacher: layers 1-6, hidden 128-384 (step 32), heads 1-12 of the teacher's head size
(q/k/v width 32-384), FFN 128-1536 (step 128); one shape for every layer.
"""

import dataclasses

import numpy as np

from bertjax.models.submodel import Arch

FIELDS = ("layers", "hidden", "heads", "ffn")


@dataclasses.dataclass(frozen=True)
class Space:
    """The allowed values of each `Arch` field (sorted tuples)."""

    layers: tuple[int, ...] = tuple(range(1, 7))
    hidden: tuple[int, ...] = tuple(range(128, 385, 32))
    heads: tuple[int, ...] = tuple(range(1, 13))
    ffn: tuple[int, ...] = tuple(range(128, 1537, 128))

    def __post_init__(self):
        for name in FIELDS:
            values = getattr(self, name)
            if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
                raise ValueError(f"search space {name} must be increasing positive ints: {values}")

    @classmethod
    def from_config(cls, block) -> "Space":
        """From a config block with `layers`, `hidden`, `heads`, `ffn` lists."""
        return cls(**{name: tuple(int(v) for v in block[name]) for name in FIELDS})

    @property
    def largest(self) -> Arch:
        return Arch(*(getattr(self, name)[-1] for name in FIELDS))

    @property
    def smallest(self) -> Arch:
        return Arch(*(getattr(self, name)[0] for name in FIELDS))

    def contains(self, arch: Arch) -> bool:
        return all(getattr(arch, name) in getattr(self, name) for name in FIELDS)

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random architecture (each field independently)."""
        return Arch(*(int(rng.choice(getattr(self, name))) for name in FIELDS))

    def mutate(self, arch: Arch, rng: np.random.Generator, probability: float) -> Arch:
        """`arch` with each field redrawn with `probability` (the paper's mutation)."""
        values = {}
        for name in FIELDS:
            redraw = rng.random() < probability
            values[name] = int(rng.choice(getattr(self, name))) if redraw else getattr(arch, name)
        return Arch(**values)

    def size(self) -> int:
        return int(np.prod([len(getattr(self, name)) for name in FIELDS]))


def sample_many(space: Space, seed: int, step: int, count: int) -> list[Arch]:
    """The `count` architectures of train step `step`: a pure function of (seed, step), so a
    resumed run samples what the uninterrupted one would have."""
    rng = np.random.default_rng([seed, step])
    return [space.sample(rng) for _ in range(count)]
