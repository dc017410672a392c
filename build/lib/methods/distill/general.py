"""General (task-agnostic) distillation losses: TinyBERT's first stage, AutoTinyBERT's KD.

No labels and no MLM head: the student learns the teacher's attention scores and
hidden states on unlabeled text (`bertjax.pretrain.general` runs it).

  layer_loss      TinyBERT general distillation (Jiao et al. 2020): for each mapped
                  `(student, teacher)` layer pair, MSE of the attention scores
                  (`tinybert.attention_mse`: head-averaged when the head counts differ)
                  plus MSE of the hidden states through the learned projection
                  `params["distill"]["projection"]`; plus the embedding MSE.
  supernet_loss   AutoTinyBERT's KD mode (Yin et al. 2021) on a masked supernet forward:
                  the last *active* layer's hidden state (projected) and attention scores
                  against the teacher's last layer. Only the sub-model's heads enter the
                  attention loss (head `n` of the sub-model learns head `n` of the
                  teacher), so a sliced sub-model would see the same loss.

Every loss is a weighted mean over real tokens (`tinybert.token_weights`); all are
pure functions of intermediates dicts (`hidden/{i}`, `attn_scores/{i}`, `embeddings`).
"""

import jax
import jax.numpy as jnp

from methods.distill.tinybert import attention_mse, hidden_mse, project, token_weights


def layer_loss(
    student: dict,
    teacher: dict,
    batch: dict,
    params: dict,
    pairs: tuple[tuple[int, int], ...],
    embedding: bool = True,
) -> tuple[jax.Array, dict]:
    """`(loss, metrics)` of TinyBERT general distillation over the layer `pairs`."""
    teacher = jax.tree_util.tree_map(jax.lax.stop_gradient, teacher)
    weights = token_weights(batch)
    attention = hidden = jnp.zeros((), jnp.float32)
    for j, i in pairs:
        attention += attention_mse(
            student[f"attn_scores/{j}"], teacher[f"attn_scores/{i}"], weights
        )
        hidden += hidden_mse(
            project(student[f"hidden/{j}"], params), teacher[f"hidden/{i}"], weights
        )
    metrics = {"attention_loss": attention, "hidden_loss": hidden}
    loss = attention + hidden
    if embedding:
        emb = hidden_mse(project(student["embeddings"], params), teacher["embeddings"], weights)
        metrics["embedding_loss"] = emb
        loss = loss + emb
    return loss, metrics


def last_active(inter: dict, key: str, layer_mask: jax.Array) -> jax.Array:
    """`inter[f"{key}/{i}"]` of the last layer `i` with `layer_mask[i]` set (first-L layers:
    layer L - 1), selected in the graph (a traced mask, no recompile)."""
    count = jnp.sum(layer_mask.astype(jnp.int32))
    stacked = jnp.stack([inter[f"{key}/{i}"] for i in range(layer_mask.shape[0])])
    return jnp.take(stacked, count - 1, axis=0)


def masked_attention_mse(
    student: jax.Array, teacher: jax.Array, weights: jax.Array, head_mask: jax.Array
) -> jax.Array:
    """MSE of [B, N, T, T] scores over real (query, key) pairs and the heads with
    `head_mask` [N] set (student and teacher have the same N slots)."""
    student, teacher = student.astype(jnp.float32), teacher.astype(jnp.float32)
    heads = head_mask.astype(jnp.float32)
    per_head = jnp.square(student - teacher) * heads[None, :, None, None]
    per_pair = jnp.sum(per_head, axis=1) / jnp.maximum(jnp.sum(heads), 1.0)
    pair = weights[:, :, None] * (weights > 0)[:, None, :]
    return jnp.sum(per_pair * pair) / jnp.maximum(jnp.sum(pair), 1.0)


def supernet_loss(
    student: dict,
    teacher: dict,
    batch: dict,
    params: dict,
    head_mask: jax.Array,
    layer_mask: jax.Array,
    teacher_layers: int,
) -> tuple[jax.Array, dict]:
    """`(loss, metrics)` of AutoTinyBERT's KD for one sampled architecture.

    `head_mask` [L, N] and `layer_mask` [L] are the architecture's masks (the last active
    layer's head row is used); the hidden state at masked-off widths is zero, so the
    projection sees the sub-model's state through the first rows of its kernel."""
    teacher = jax.tree_util.tree_map(jax.lax.stop_gradient, teacher)
    weights = token_weights(batch)
    last = teacher_layers - 1
    count = jnp.sum(layer_mask.astype(jnp.int32))
    heads = jnp.take(head_mask, count - 1, axis=0)
    scores = last_active(student, "attn_scores", layer_mask)
    hidden = last_active(student, "hidden", layer_mask)
    attention = masked_attention_mse(scores, teacher[f"attn_scores/{last}"], weights, heads)
    hidden_loss = hidden_mse(project(hidden, params), teacher[f"hidden/{last}"], weights)
    return attention + hidden_loss, {"attention_loss": attention, "hidden_loss": hidden_loss}
