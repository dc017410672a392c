"""TR-BERT token reduction (Ye et al. 2021), trained as the authors' code trains it.

Before layer 1 and layer L/2 (`layers`, 0-based; for 6 layers: 1 and 3) a small policy
net on the hidden state, `Dense(H -> 32) -> GELU -> Dense(32 -> 1) -> sigmoid`, gives
each token a keep probability; [CLS] always stays, and a dropped token leaves the
sequence for every later layer. In training dropping is a key mask of fixed shape
(`Interventions.tokens`, read by `LayerStack`); at inference
`bertjax/inference/token_reduction.py` gathers the kept tokens so later layers really
run on fewer (tokens with probability >= 0.5).

Training (one run, from the fine-tuned model; the authors run the two phases as two):
  policy phase (`policy_fraction` of the steps): only the policy nets learn (the model's
    updates are scaled to 0, the policy sees its input under stop_gradient), by
    REINFORCE: each input repeated `samples` (K = 8) times (`prepare`), Bernoulli keep
    actions, reward = -task loss - alpha * mean over selections of (kept / real length),
    baseline the mean reward of the K copies of the same input;
    loss = mean over rows of (reward - baseline) * (-log pi(actions)), the log
    probability averaged over the candidate tokens. In the first `guide_fraction` of
    these steps the first copy of each input imitates gradient importance: it keeps the
    top round(sum of its probabilities) tokens by |dL/dh_g . (h_g - h_s)| (h_g the
    output of `guide_layer`, h_s the input of the selection layer; computed by the
    model with every token, `prepare`).
  joint phase: everything learns, the loss so far (soft cross-entropy against the
    teacher: `config.distill`, logit KD with alpha 1) plus the RL loss, whose reward
    then uses that soft cross-entropy (as the authors' `--train_both --train_teacher`).

The policy params live under `params["token_policy"]["{layer}"]` with their own Adam
(`policy_lr`); `finalize` leaves them out of the export (they are in the checkpoint).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bertjax.models.interventions import Interventions, TokenSelection
from methods import losses
from methods.base import Method, fields_from

POLICY = "token_policy"


def policy_probability(params: dict, x: jax.Array) -> jax.Array:
    """Keep probability [B, T] of hidden states `x` [B, T, H]:
    sigmoid(Dense(GELU(Dense(x)))) with params `{dense_1, dense_2: {kernel, bias}}`."""
    first, second = params["dense_1"], params["dense_2"]
    hidden = jax.nn.gelu(x @ first["kernel"] + first["bias"], approximate=False)
    return jax.nn.sigmoid((hidden @ second["kernel"] + second["bias"])[..., 0])


def init_policy(key: jax.Array, hidden_size: int, width: int) -> dict:
    """PyTorch `nn.Linear`'s default init (uniform +-1/sqrt(fan_in)), as the authors'."""

    def dense(key, fan_in, fan_out):
        bound = 1.0 / math.sqrt(fan_in)
        k1, k2 = jax.random.split(key)
        return {
            "kernel": jax.random.uniform(k1, (fan_in, fan_out), jnp.float32, -bound, bound),
            "bias": jax.random.uniform(k2, (fan_out,), jnp.float32, -bound, bound),
        }

    k1, k2 = jax.random.split(key)
    return {"dense_1": dense(k1, hidden_size, width), "dense_2": dense(k2, width, 1)}


def layer_flops(tokens, hidden_size: int, intermediate_size: int):
    """Multiply-add FLOPs (2 per MAC) of one BERT layer on `tokens` tokens: the four
    H x H projections and the FFN (linear in tokens), q.k and probs.v (quadratic)."""
    linear = 2 * tokens * (4 * hidden_size**2 + 2 * hidden_size * intermediate_size)
    return linear + 4 * tokens**2 * hidden_size


def encoder_flops(lengths, kept, layers, num_layers, hidden_size, intermediate_size):
    """FLOPs [N] of the encoder per example: layer i runs on `lengths` [N] tokens before
    the first selection layer and on `kept[:, j]` [N, S] from `layers[j]` on."""
    lengths = np.asarray(lengths, np.float64)
    total = np.zeros_like(lengths)
    for i in range(num_layers):
        stage = sum(1 for layer in layers if layer <= i)
        tokens = lengths if stage == 0 else np.asarray(kept, np.float64)[:, stage - 1]
        total += layer_flops(tokens, hidden_size, intermediate_size)
    return total


def split(params: dict) -> tuple[dict, dict | None]:
    """`(model params, policy params)`."""
    return {k: v for k, v in params.items() if k != POLICY}, params.get(POLICY)


def repeat(batch: dict, copies: int) -> dict:
    """Every array of `batch` [B, ...] as [copies * B, ...], copy-major (row c * B + b)."""
    return {k: jnp.concatenate([jnp.asarray(v)] * copies, axis=0) for k, v in batch.items()}


@dataclasses.dataclass(frozen=True)
class TokenReduction(Method):
    alpha: float = 1.0
    samples: int = 8
    policy_fraction: float = 0.5
    guide_fraction: float = 0.5
    policy_lr: float = 1e-3
    width: int = 32
    threshold: float = 0.5
    temperature: float = 1.0
    layers: tuple[int, ...] = (1, 3)
    guide_layer: int = 4
    # Derived in from_config (model shape, step counts).
    policy_steps: int = 0
    guide_steps: int = 0
    num_layers: int = 6
    hidden_size: int = 384
    intermediate_size: int = 1536

    def __post_init__(self):
        if not self.layers or list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"token_reduction.layers {self.layers} must be increasing")
        if self.layers[0] < 1 or self.layers[-1] >= self.num_layers:
            raise ValueError(f"token_reduction.layers {self.layers}: each in 1..L-1")
        # dL/dh of the last layer is zero but at [CLS] (the pooler reads only [CLS]).
        if not self.layers[-1] - 1 <= self.guide_layer <= self.num_layers - 2:
            raise ValueError(
                f"token_reduction.guide_layer {self.guide_layer}: must be in "
                f"{self.layers[-1] - 1}..{self.num_layers - 2} (the last layer's gradient "
                "is zero but at [CLS])"
            )
        if self.samples < 2:
            raise ValueError("token_reduction.samples must be >= 2 (the baseline is their mean)")

    @classmethod
    def from_config(cls, block, context):
        model = context.model
        num_layers = model.num_hidden_layers
        values = fields_from(cls, block)
        values.setdefault("layers", ())
        if not values["layers"]:
            values["layers"] = tuple(sorted({1, max(num_layers // 2, 1)}))
        guide = values.get("guide_layer", -2)
        values["guide_layer"] = guide + num_layers if guide < 0 else guide
        policy_steps = context.steps(values.get("policy_fraction", cls.policy_fraction))
        return cls(
            **values,
            policy_steps=policy_steps,
            guide_steps=int(round(values.get("guide_fraction", cls.guide_fraction) * policy_steps)),
            num_layers=num_layers,
            hidden_size=model.hidden_size,
            intermediate_size=model.ffn_size(0),
        )

    @property
    def name(self) -> str:
        return "token_reduction"

    @property
    def intermediates(self):
        return ("tokens",)

    def init(self, params, rngs):
        keys = jax.random.split(rngs["params"], len(self.layers))
        policy = {
            str(layer): init_policy(key, self.hidden_size, self.width)
            for layer, key in zip(self.layers, keys, strict=True)
        }
        return {**params, POLICY: policy}, {"seed": jax.random.key_data(rngs["state"])}

    def selection(self, policy: dict, **fields) -> TokenSelection:
        """The `TokenSelection` of this method's policy nets (`policy`: their params)."""
        return TokenSelection(
            layers=tuple(self.layers),
            policy=policy_probability,
            params=tuple(policy[str(layer)] for layer in self.layers),
            threshold=self.threshold,
            **fields,
        )

    def present(self, params, state, step, train):
        model_params, policy = split(params)
        if not train:
            return model_params, Interventions(tokens=self.selection(policy))
        key = jax.random.fold_in(jax.random.wrap_key_data(state["seed"]), step)
        tokens = self.selection(
            policy,
            key=key,
            guide=state.get("guide"),
            guided=state.get("guided"),
            detach=jnp.asarray(step < self.policy_steps),
        )
        return model_params, Interventions(tokens=tokens)

    def prepare(self, batch, params, state, step, apply):
        """The batch repeated K times; with the imitation guide of the first copies
        (`state["guide"]` [K B, S, T], `state["guided"]` [K B]) while it is on."""
        rows = batch["input_ids"].shape[0]
        if self.guide_steps > 0:
            guide_on = step < self.guide_steps
            guide = jax.lax.cond(
                guide_on,
                lambda: self.importance(batch, params, apply),
                lambda: jnp.zeros((rows, len(self.layers), batch["input_ids"].shape[1])),
            )
            guided = (jnp.arange(rows * self.samples) < rows) & guide_on
            state = {**state, "guide": repeat({"g": guide}, self.samples)["g"], "guided": guided}
        return repeat(batch, self.samples), state

    def importance(self, batch, params, apply):
        """Gradient importance [B, S, T]: |dL/dh_g . (h_g - h_s)| for each selection
        layer s (h_s its input), from the model with every token kept."""
        model_params, _ = split(params)
        shape = (*batch["input_ids"].shape, self.hidden_size)

        def loss_of(probe):
            tokens = TokenSelection(probe=probe, probe_layer=self.guide_layer)
            outputs, inter = apply(model_params, batch, Interventions(tokens=tokens), ("hidden",))
            loss = losses.per_example(outputs["logits"], batch["labels"], regression=False)
            return jnp.sum(loss * batch["weights"]), inter

        grad, inter = jax.grad(loss_of, has_aux=True)(jnp.zeros(shape, jnp.float32))
        top = inter[f"hidden/{self.guide_layer}"]
        scores = [
            jnp.abs(jnp.sum(grad * (top - inter[f"hidden/{layer - 1}"]), -1))
            for layer in self.layers
        ]
        return jax.lax.stop_gradient(jnp.stack(scores, axis=1))

    def rl_loss(self, per_example_loss, inter, batch):
        """`(REINFORCE loss, metrics)` of K-copy rows (see the module doc)."""
        mask = inter["token_mask"]
        length = jnp.maximum(jnp.sum(mask, -1), 1).astype(jnp.float32)
        not_cls = jnp.arange(mask.shape[-1])[None, :] > 0
        before, log_prob, ratios = mask, 0.0, []
        for layer in self.layers:
            probability = inter[f"token_prob/{layer}"]
            keep = inter[f"token_keep/{layer}"]
            action = keep.astype(jnp.float32)
            candidates = (before & not_cls).astype(jnp.float32)
            token_log_prob = action * jnp.log(probability + 1e-6) + (1 - action) * jnp.log(
                1 - probability + 1e-6
            )
            log_prob += jnp.sum(token_log_prob * candidates, -1) / jnp.maximum(
                jnp.sum(candidates, -1), 1.0
            )
            ratios.append(jnp.sum(keep, -1) / length)
            before = keep
        kept = sum(ratios) / len(ratios)
        reward = jax.lax.stop_gradient(-per_example_loss - self.alpha * kept)
        grouped = reward.reshape(self.samples, -1)
        advantage = (grouped - jnp.mean(grouped, axis=0, keepdims=True)).reshape(-1)
        weights = batch["weights"]
        denominator = jnp.maximum(jnp.sum(weights), 1.0)
        loss = jnp.sum(advantage * -log_prob * weights) / denominator
        metrics = {
            "rl_loss": loss,
            "kept_fraction": jnp.sum(kept * weights) / denominator,
            "reward": jnp.sum(reward * weights) / denominator,
        }
        return loss, metrics

    def loss(self, task_loss, student, teacher, batch, params, state, step):
        outputs, inter = student
        logits = outputs["logits"].astype(jnp.float32)
        hard = losses.per_example(logits, batch["labels"], regression=False)
        in_policy_phase = step < self.policy_steps
        if teacher is not None:
            targets = jax.nn.softmax(teacher[0]["logits"].astype(jnp.float32) / self.temperature)
            soft = -jnp.sum(targets * jax.nn.log_softmax(logits / self.temperature), -1)
            per_example = jnp.where(in_policy_phase, hard, soft)
        else:
            per_example = hard
        rl, metrics = self.rl_loss(per_example, inter, batch)
        return jnp.where(in_policy_phase, rl, task_loss + rl), metrics

    def wrap_optimizer(self, tx, params):
        frozen_first = optax.scale_by_schedule(
            lambda count: (count >= self.policy_steps).astype(jnp.float32)
        )
        groups = {"policy": optax.adam(self.policy_lr), "model": optax.chain(tx, frozen_first)}

        def labels(tree):
            return {
                key: jax.tree_util.tree_map(
                    lambda _, g="policy" if key == POLICY else "model": g, v
                )
                for key, v in tree.items()
            }

        return optax.multi_transform(groups, labels)

    def finalize(self, params, state, config):
        # The policy nets ship with the model (a side tree of the export, skipped by the
        # model loader): `bertjax.inference.token_reduction.load` runs the reduced model.
        return params, config

    def report(self, params, state):
        return {
            "token_selection_layers": list(self.layers),
            "token_alpha": self.alpha,
            "token_policy_steps": self.policy_steps,
            "token_guide_steps": self.guide_steps,
        }

    @property
    def has_eval_outputs(self):
        return True

    def eval_outputs(self, params, state, outputs, inter, batch):
        kept = jnp.stack([jnp.sum(inter[f"token_keep/{layer}"], -1) for layer in self.layers], -1)
        return {"tokens_in": jnp.sum(inter["token_mask"], -1), "tokens_kept": kept}

    def eval_report(self, extras, score):
        lengths, kept = np.asarray(extras["tokens_in"]), np.asarray(extras["tokens_kept"])
        shape = (self.layers, self.num_layers, self.hidden_size, self.intermediate_size)
        reduced = encoder_flops(lengths, kept, *shape)
        dense = encoder_flops(lengths, np.stack([lengths] * len(self.layers), -1), *shape)
        return {
            "tokens_mean_length": float(lengths.mean()),
            "tokens_kept_mean": {
                str(layer): float(kept[:, j].mean()) for j, layer in enumerate(self.layers)
            },
            "flops_per_example": float(reduced.mean()),
            "flops_dense_per_example": float(dense.mean()),
            "flops_ratio": float(reduced.sum() / dense.sum()),
        }
