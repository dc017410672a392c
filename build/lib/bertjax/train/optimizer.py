"""AdamW with linear warmup and decay, as BERT fine-tuning uses."""

import optax
from ml_collections import ConfigDict

from methods import selectors

# Biases and LayerNorm parameters get no weight decay (Devlin et al. 2019).
NO_DECAY = (r".*/bias", r".*LayerNorm/scale")


def learning_rate_schedule(peak: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
    """0 -> peak over `warmup_steps`, then linearly to 0 at `total_steps`."""
    warmup_steps = max(0, min(warmup_steps, total_steps))
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, max(warmup_steps, 1)),
            optax.linear_schedule(peak, 0.0, max(total_steps - warmup_steps, 1)),
        ],
        [warmup_steps],
    )


def make_optimizer(train: ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """Gradient clipping then AdamW; `train` is the `config.train` block."""
    schedule = learning_rate_schedule(
        train.learning_rate, total_steps, int(round(train.warmup_ratio * total_steps))
    )
    # A callable mask, so it also fits the partial trees that optimizer wrappers
    # (e.g. BitFit's partition) hand to AdamW.
    decay_mask = lambda tree: selectors.select(tree, ".*", exclude=NO_DECAY)
    return optax.chain(
        optax.clip_by_global_norm(train.max_grad_norm),
        optax.adamw(
            schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=train.weight_decay, mask=decay_mask
        ),
    )
