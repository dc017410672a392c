"""Layer dropping (Sajjad et al., "Poor Man's BERT"): remove whole layers, then fine-tune.

Strategies for dropping `drop` of `num_layers` layers (0-based indices):
  top        the last `drop` layers          bottom     the first `drop` layers
  even/odd   alternate layers from the top: 1-based even (L, L-2, ...) or odd
             (L-1, L-3, ...) positions
  symmetric  `drop` layers from the middle, keeping the top and bottom ones
  contribution  the layers whose output is most similar to their input
             (cosine over real tokens; `layer_similarity` computes it from
             collected hidden states, `least_contributing` picks the layers;
             the train loop averages it over calibration batches and builds
             the method with `explicit` indices)
  explicit   `layers_to_drop` as given
The model runs only the kept layers (the `layers` intervention); `finalize`
removes the others and renumbers.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models import layout
from bertjax.models.interventions import Interventions
from methods.base import Method

STRATEGIES = ("top", "bottom", "even", "odd", "symmetric", "explicit")


def dropped_layers(
    strategy: str, num_layers: int, drop: int, explicit: tuple[int, ...] = ()
) -> tuple[int, ...]:
    """Sorted 0-based indices of the layers a strategy drops."""
    if strategy == "explicit":
        chosen = tuple(explicit)
    elif not 0 <= drop < num_layers:
        raise ValueError(f"cannot drop {drop} of {num_layers} layers")
    elif strategy == "top":
        chosen = tuple(range(num_layers - drop, num_layers))
    elif strategy == "bottom":
        chosen = tuple(range(drop))
    elif strategy in ("even", "odd"):
        first = num_layers - 1 if strategy == "even" else num_layers - 2
        chosen = tuple(range(first, -1, -2))[:drop]
        if len(chosen) < drop:
            raise ValueError(f"only {len(chosen)} {strategy} layers in {num_layers}")
    elif strategy == "symmetric":
        start = (num_layers - drop) // 2
        chosen = tuple(range(start, start + drop))
    else:
        raise ValueError(f"unknown layer-drop strategy {strategy!r}; known: {STRATEGIES}")
    if any(not 0 <= i < num_layers for i in chosen) or len(set(chosen)) >= num_layers:
        raise ValueError(f"bad layers to drop {chosen} for {num_layers} layers")
    return tuple(sorted(set(chosen)))


def layer_similarity(inter: dict, attention_mask: jax.Array, num_layers: int) -> jax.Array:
    """[num_layers] mean cosine similarity of each layer's input and output over real
    tokens (higher = the layer changes its input less). `inter` needs `embeddings`
    and `hidden/{i}` [B, T, H]; `attention_mask` [B, T]."""
    mask = attention_mask.astype(jnp.float32)
    similarity = []
    for i in range(num_layers):
        before = inter["embeddings"] if i == 0 else inter[f"hidden/{i - 1}"]
        after = inter[f"hidden/{i}"]
        cos = jnp.sum(before * after, -1) / (
            jnp.linalg.norm(before, axis=-1) * jnp.linalg.norm(after, axis=-1) + 1e-12
        )
        similarity.append(jnp.sum(cos * mask) / jnp.maximum(jnp.sum(mask), 1.0))
    return jnp.stack(similarity)


def contribution_ranking(inter: dict, attention_mask: jax.Array, num_layers: int) -> np.ndarray:
    """Layers ordered from least to most contributing (see `layer_similarity`)."""
    similarity = np.asarray(layer_similarity(inter, attention_mask, num_layers))
    return np.argsort(-similarity, kind="stable")


def least_contributing(similarity: np.ndarray, drop: int) -> tuple[int, ...]:
    """Sorted indices of the `drop` layers of highest similarity (ties: lower index)."""
    return tuple(sorted(int(i) for i in np.argsort(-np.asarray(similarity), kind="stable")[:drop]))


@dataclasses.dataclass(frozen=True)
class LayerDrop(Method):
    num_layers: int
    drop: int = 0
    strategy: str = "top"
    layers_to_drop: tuple[int, ...] = ()
    label: str = ""  # the strategy the user asked for (e.g. contribution), for `name`

    def __post_init__(self):
        dropped_layers(self.strategy, self.num_layers, self.drop, self.layers_to_drop)

    @classmethod
    def from_config(cls, block, context):
        strategy = block.strategy
        if strategy == "contribution":
            # The loop measures the layers first (calibration.resolve_layer_drop) and sets them.
            if block.drop and not block.layers:
                raise ValueError(
                    "layer_drop strategy 'contribution' needs its layers measured first: "
                    "train_and_evaluate does it (bertjax.train.calibration.resolve_layer_drop)"
                )
            strategy = "explicit"
        return cls(
            num_layers=context.model.num_hidden_layers,
            drop=block.drop,
            strategy=strategy,
            layers_to_drop=tuple(block.layers),
            label=block.strategy,
        )

    @property
    def name(self) -> str:
        return f"layer_drop_{self.label or self.strategy}{self.drop}"

    @property
    def kept(self) -> tuple[int, ...]:
        gone = set(dropped_layers(self.strategy, self.num_layers, self.drop, self.layers_to_drop))
        return tuple(i for i in range(self.num_layers) if i not in gone)

    def present(self, params, state, step, train):
        return params, Interventions(layers=self.kept)

    def finalize(self, params, state, config):
        kept = self.kept
        return layout.select_layers(params, kept), config.with_layers(kept)

    def report(self, params, state):
        kept = self.kept
        dropped = [i for i in range(self.num_layers) if i not in kept]
        return {"layers_kept": list(kept), "layers_dropped": dropped}
