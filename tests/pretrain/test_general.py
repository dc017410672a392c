"""General distillation on unlabeled text, and the AutoTinyBERT supernet step."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertjax.data import corpus
from bertjax.models import build, load_pretrained, save_pretrained, submodel
from bertjax.models.config import BertConfig
from bertjax.pretrain import steps
from bertjax.pretrain.general import general_distill
from bertjax.search.space import Space, sample_many
from bertjax.train.state import TrainState
from configs import general_distill as general_config
from configs import supernet as supernet_config


def test_chunks_are_cls_pieces_sep():
    chunks = corpus.chunk_ids(np.arange(10, 21), seq_len=5, cls_id=1, sep_id=2)
    np.testing.assert_array_equal(
        chunks, [[1, 10, 11, 12, 2], [1, 13, 14, 15, 2], [1, 16, 17, 18, 2]]
    )


def test_train_batches_resume_where_they_stopped():
    chunks = np.arange(40).reshape(10, 4)
    whole = list(corpus.train_batches(chunks, 3, seed=0, epoch=1))
    resumed = list(corpus.train_batches(chunks, 3, seed=0, epoch=1, start_batch=2))
    assert len(whole) == 3
    np.testing.assert_array_equal(whole[2]["input_ids"], resumed[0]["input_ids"])


def _tiny(vocab_size, hidden, layers, heads, ffn):
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=64,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, teacher_dir):
    """A tiny random teacher and student (HF layout, the real vocabulary) and a text file."""
    root = tmp_path_factory.mktemp("general")
    teacher, params = build(_tiny(30522, 32, 2, 4, 64), seed=3)
    save_pretrained(teacher, params, root / "teacher", tokenizer=str(teacher_dir))
    student, params = build(_tiny(30522, 16, 1, 2, 32), seed=4)
    save_pretrained(student, params, root / "student", tokenizer=str(teacher_dir))
    text = "the quick brown fox jumps over the lazy dog . " * 200
    (root / "corpus.txt").write_text("\n".join([text] * 3) + "\n")
    return root


def test_general_distillation_lowers_its_loss(tiny_run):
    root = tiny_run
    config = general_config.get_config(f"student={root / 'student'},teacher={root / 'teacher'}")
    config.corpus.name = str(root / "corpus.txt")
    config.corpus.eval_split = "train"
    config.corpus.seq_len = 16
    config.corpus.eval_limit = 8
    config.model.hidden_dropout_prob = config.model.attention_probs_dropout_prob = 0.0
    config.train.num_steps = 24
    config.train.batch_size = 8
    config.train.eval_batch_size = 8
    config.train.learning_rate = 3e-3
    config.train.log_every_steps = 1
    config.train.eval_every_steps = 24
    config.checkpoint.every_steps = 12
    results = general_distill(config, root / "run")
    log = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < 0.7 * losses[0], losses
    assert results["metrics"]["loss"] < losses[0]
    model, params = load_pretrained(root / "run" / "export")
    assert model.config.hidden_size == 16 and "distill" not in params
    assert (root / "run" / "projection.npz").is_file()


def test_supernet_step_compiles_once_across_sampled_archs():
    config = _tiny(64, 32, 3, 4, 48)
    teacher, teacher_params = build(config, seed=1)
    model, params = build(config, seed=2)
    params = {**params, "distill": {"projection": {
        "kernel": jnp.eye(32), "bias": jnp.zeros(32)}}}  # fmt: skip
    state = TrainState.create(params, optax.adam(1e-3), seed=0)
    space = Space(layers=(1, 2, 3), hidden=(16, 24, 32), heads=(1, 2, 3, 4), ffn=(16, 32, 48))
    step = jax.jit(chex.assert_max_traces(steps.supernet_step_fn(model, teacher), n=1))
    ids = jax.random.randint(jax.random.key(0), (4, 12), 1, 64)
    batch = {**corpus.as_batch(np.asarray(ids))}
    seen = set()
    for i in range(3):
        archs = sample_many(space, seed=0, step=i, count=2)
        seen.update(archs)
        masks = [submodel.mask_arrays(config, arch) for arch in archs]
        stacked = {k: np.stack([m[k] for m in masks]) for k in masks[0]}
        state, metrics = step(state, teacher_params, batch, stacked)
        assert np.isfinite(float(metrics["loss"]))
    assert len(seen) > 2 and int(state.step) == 3


@pytest.mark.slow  # 23 s; the supernet step's compile-once test stays in the default suite
def test_supernet_gradients_are_the_mean_over_archs():
    config = _tiny(64, 32, 2, 4, 48)
    teacher, teacher_params = build(config, seed=1)
    model, params = build(config, seed=2)
    params = {**params, "distill": {"projection": {"kernel": jnp.eye(32), "bias": jnp.zeros(32)}}}
    ids = jax.random.randint(jax.random.key(0), (2, 8), 1, 64)
    batch = corpus.as_batch(np.asarray(ids))
    archs = [submodel.Arch(1, 16, 2, 16), submodel.Arch(2, 32, 4, 48)]
    masks = [submodel.mask_arrays(config, arch) for arch in archs]
    stacked = {k: np.stack([m[k] for m in masks]) for k in masks[0]}
    # SGD with rate 1: the update is minus the gradient the step used.
    state = TrainState.create(params, optax.sgd(1.0), seed=0)
    new_state, _ = steps.supernet_step_fn(model, teacher)(state, teacher_params, batch, stacked)
    loss_fn = steps.supernet_loss_fn(model, teacher)
    teacher_inter = steps.apply_model(
        teacher, teacher_params, batch, collect=("hidden", "attn_scores")
    )
    rng = state.step_rng()
    grads = [
        jax.grad(
            lambda p, m=m, k=k: loss_fn(p, teacher_inter, batch, m, jax.random.fold_in(rng, k))[0]
        )(params)
        for k, m in enumerate(masks)
    ]
    expected = jax.tree_util.tree_map(lambda p, a, b: p - (a + b) / 2, params, *grads)
    chex.assert_trees_all_close(new_state.params, expected, atol=1e-5)


def test_configs_build_and_validate():
    from bertjax.train import validation

    validation.check_config(general_config.get_config("smoke=True"))
    config = supernet_config.get_config("smoke=True")
    validation.check_config(config)
    config.supernet.init = "pretrained"
    with pytest.raises(ValueError, match="supernet.init"):
        validation.check_config(config)
