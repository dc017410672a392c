"""AutoTinyBERT's evolutionary search under a latency window (Yin et al. 2021, Alg. 1).

A population of architectures whose *predicted* latency lies in the window
`[low, high]` is scored by `fitness` (higher is better; here a one-shot evaluation
of the supernet's sub-model, `oneshot.py`); each generation keeps the best `parents`
and fills the population with their mutations (each field redrawn with
`mutation_probability`), again only inside the window. Scores are cached: an
architecture is evaluated once.
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from bertjax.models.submodel import Arch
from bertjax.search.space import Space


@dataclasses.dataclass(frozen=True)
class SearchResult:
    best: Arch
    best_fitness: float
    history: list[dict]  # per generation: best, fitness, population size
    scores: dict[Arch, float]


def _draw(
    rng: np.random.Generator,
    make: Callable[[], Arch],
    in_window: Callable[[Arch], bool],
    tries: int,
) -> Arch | None:
    for _ in range(tries):
        arch = make()
        if in_window(arch):
            return arch
    return None


def evolve(
    space: Space,
    fitness: Callable[[Arch], float],
    latency: Callable[[Arch], float],
    window: tuple[float, float],
    *,
    population: int = 16,
    generations: int = 4,
    parents: int = 4,
    mutation_probability: float = 0.5,
    seed: int = 0,
    tries: int = 2000,
    on_generation: Callable[[int, dict], None] | None = None,
) -> SearchResult:
    """The fittest architecture found whose `latency(arch)` is within `window`."""
    low, high = window
    if not 0 <= low <= high:
        raise ValueError(f"latency window must be 0 <= low <= high, got {window}")
    if not 1 <= parents <= population:
        raise ValueError(f"need 1 <= parents <= population, got {parents}, {population}")
    rng = np.random.default_rng(seed)
    scores: dict[Arch, float] = {}

    def in_window(arch: Arch) -> bool:
        return low <= latency(arch) <= high

    def score(arch: Arch) -> float:
        if arch not in scores:
            scores[arch] = float(fitness(arch))
        return scores[arch]

    members: list[Arch] = []
    while len(members) < population:
        arch = _draw(rng, lambda: space.sample(rng), in_window, tries)
        if arch is None:
            if not members:
                raise ValueError(f"no architecture of the space within latency window {window}")
            break
        if arch not in members:
            members.append(arch)
    history = []
    for generation in range(generations):
        ranked = sorted(members, key=score, reverse=True)
        best = ranked[0]
        record = {"generation": generation, "best": best.as_dict(), "fitness": score(best),
                  "evaluated": len(scores)}  # fmt: skip
        history.append(record)
        if on_generation is not None:
            on_generation(generation, record)
        if generation == generations - 1:
            break
        elite = ranked[:parents]
        children: list[Arch] = list(elite)
        for _ in range(tries):
            if len(children) >= population:
                break
            parent = elite[int(rng.integers(len(elite)))]
            child = space.mutate(parent, rng, mutation_probability)
            if child not in children and in_window(child):
                children.append(child)
        members = children
    best = max(scores, key=scores.get)
    return SearchResult(best, scores[best], history, scores)
