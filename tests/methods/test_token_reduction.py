"""TR-BERT token reduction: the masked selection in the model, the REINFORCE loss, a run."""

import importlib.util
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertjax import models
from bertjax.models import staged
from bertjax.models.interventions import Interventions, TokenSelection
from bertjax.train import loop
from configs import finetune, token_reduction
from methods.base import Context
from methods.dynamic import token_reduction as tr

REPO = Path(__file__).resolve().parents[2]

CONFIG = models.BertConfig(
    vocab_size=200, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=16,
)  # fmt: skip
LENGTHS = (10, 7, 4)


def _setup():
    model = models.BertModel(CONFIG, head="classification", num_labels=2)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(1, 200, (3, 10)), jnp.int32)
    mask = jnp.asarray(np.arange(10)[None, :] < np.array(LENGTHS)[:, None], jnp.int32)
    params = model.init(jax.random.key(0), ids, mask)["params"]
    return model, params, ids, mask


def _fixed(probabilities):
    """A 'policy' whose params are the probabilities themselves [B, T]."""
    return lambda params, x: params


def _selection(probabilities, layers=(1, 3)):
    return TokenSelection(
        layers=layers, policy=_fixed(None), params=tuple(jnp.asarray(p) for p in probabilities)
    )


def test_keep_all_equals_the_dense_model():
    model, params, ids, mask = _setup()
    ones = np.ones((3, 10), np.float32)
    dense, _ = model.apply({"params": params}, ids, mask)
    kept, inter = model.apply(
        {"params": params}, ids, mask,
        interventions=Interventions(tokens=_selection([ones, ones])), collect=("tokens",),
    )  # fmt: skip
    np.testing.assert_allclose(kept["logits"], dense["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(inter["token_keep/3"], np.asarray(mask, bool))


def test_keeps_cls_and_exactly_the_selected_tokens():
    model, params, ids, mask = _setup()
    rng = np.random.default_rng(1)
    first = rng.uniform(size=(3, 10)).astype(np.float32)
    second = rng.uniform(size=(3, 10)).astype(np.float32)
    first[:, 0] = 0.0  # [CLS] stays whatever its probability
    outputs, inter = model.apply(
        {"params": params}, ids, mask,
        interventions=Interventions(tokens=_selection([first, second])), collect=("tokens",),
    )  # fmt: skip
    real = np.asarray(mask, bool)
    keep_1 = real & ((first >= 0.5) | (np.arange(10) == 0))
    keep_3 = keep_1 & ((second >= 0.5) | (np.arange(10) == 0))
    np.testing.assert_array_equal(inter["token_keep/1"], keep_1)
    np.testing.assert_array_equal(inter["token_keep/3"], keep_3)
    assert keep_3[:, 0].all() and keep_3.sum() < real.sum()
    # Reference: layers run with the attention mask of the tokens kept before them.
    x, bias = staged.embed(model, params, ids, mask)
    for i in range(4):
        keep = real if i < 1 else keep_1 if i < 3 else keep_3
        x = staged.layer(model, params, i, x, staged.attention_bias(jnp.asarray(keep, jnp.int32)))
    np.testing.assert_allclose(
        outputs["logits"], staged.head(model, params, x), rtol=1e-5, atol=1e-5
    )


def test_sampled_actions_and_imitation():
    probability = np.full((2, 6), 0.3, np.float32)
    keep = jnp.ones((2, 6), bool)
    guide = np.array([[[0, 5, 1, 4, 2, 3]], [[0, 1, 2, 3, 4, 5]]], np.float32)
    selection = TokenSelection(
        layers=(1,), policy=_fixed(None), params=(jnp.asarray(probability),),
        key=jax.random.key(0), guide=jnp.asarray(guide), guided=jnp.array([True, False]),
    )  # fmt: skip
    new_keep, _ = selection.select(0, jnp.zeros((2, 6, 4)), keep)
    # Guided row: round(6 * 0.3) = 2 tokens with the largest guide (positions 1, 3), + [CLS].
    np.testing.assert_array_equal(new_keep[0], [True, True, False, True, False, False])
    draws = [
        np.asarray(selection.replace(key=jax.random.key(s), guide=None).select(0, keep, keep)[0])
        for s in range(200)
    ]  # (x is unused by the fixed policy)
    rate = np.mean([d[:, 1:] for d in draws])
    assert abs(rate - 0.3) < 0.03


def _method(**kw):
    context = Context(total_steps=10, model=CONFIG)
    block = {"alpha": 0.5, "samples": 2, "layers": (1,), **kw}
    return tr.TokenReduction.from_config(block, context)


def test_reinforce_gradient_matches_a_hand_computation():
    """Toy policy p_t = sigmoid(w * f_t); d/dw of the loss, by hand:
    sum_r adv_r * -(1/n_r) sum_t (a_t - p_t) f_t over candidates, / rows."""
    method = _method()
    rng = np.random.default_rng(0)
    rows, tokens = 4, 5  # 2 copies x 2 inputs
    features = rng.normal(size=(rows, tokens))
    mask = np.ones((rows, tokens), bool)
    mask[1, 3:] = False
    mask[3, 3:] = False  # copies of input 1 have 3 real tokens
    actions = (rng.uniform(size=(rows, tokens)) < 0.5) & mask
    actions[:, 0] = True
    task = np.array([0.7, 0.2, 0.4, 0.9])
    batch = {"weights": jnp.ones(rows)}

    def loss_of(w):
        probability = jax.nn.sigmoid(w * features)
        inter = {"token_mask": mask, "token_prob/1": probability, "token_keep/1": actions}
        return method.rl_loss(jnp.asarray(task), inter, batch)[0]

    w = 0.3
    got = jax.grad(loss_of)(w)
    p = 1 / (1 + np.exp(-w * features))
    candidates = mask & (np.arange(tokens) > 0)
    kept = actions.sum(-1) / mask.sum(-1)
    reward = (-task - 0.5 * kept).reshape(2, 2)
    advantage = (reward - reward.mean(0)).reshape(-1)
    score = ((actions - p) * features * candidates).sum(-1) / candidates.sum(-1)
    expected = np.sum(advantage * -score) / rows
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_from_config_defaults_and_flops():
    method = _method(layers=(), guide_layer=-2, policy_fraction=0.5, guide_fraction=0.5)
    assert method.layers == (1, 2) and method.guide_layer == 2
    assert (method.policy_steps, method.guide_steps) == (5, 2)
    report = method.eval_report(
        {"tokens_in": np.array([10, 4]), "tokens_kept": np.array([[10, 10], [4, 4]])}, None
    )
    assert report["flops_ratio"] == pytest.approx(1.0)
    half = method.eval_report(
        {"tokens_in": np.array([10]), "tokens_kept": np.array([[5, 5]])}, None
    )
    assert half["flops_ratio"] < 0.75 and half["tokens_kept_mean"] == {"1": 5.0, "2": 5.0}


def test_prepare_repeats_the_batch_with_the_guide_on_the_first_copy():
    model, params, ids, mask = _setup()
    method = _method(guide_layer=2, policy_fraction=1.0, guide_fraction=1.0)
    params, state = method.init(params, loop.rng_streams(0))

    def apply(p, batch, interventions, collect):
        return model.apply(
            {"params": p}, batch["input_ids"], batch["attention_mask"],
            collect=collect, interventions=interventions,
        )  # fmt: skip

    batch = {"input_ids": ids, "attention_mask": mask, "labels": jnp.array([0, 1, 0]),
             "weights": jnp.ones(3)}  # fmt: skip
    repeated, step_state = method.prepare(batch, params, state, 0, apply)
    assert repeated["input_ids"].shape == (6, 10)
    np.testing.assert_array_equal(repeated["input_ids"][3:], ids)
    np.testing.assert_array_equal(step_state["guided"], [True] * 3 + [False] * 3)
    guide = np.asarray(step_state["guide"])
    assert guide.shape == (6, 1, 10) and (guide[:, 0, 1:] > 0).any()
    _, later = method.prepare(batch, params, state, 10, apply)
    assert not np.asarray(later["guided"]).any()


def test_policy_phase_leaves_the_model_unchanged():
    method = _method(policy_fraction=0.2)  # 2 of 10 steps
    params = {"bert": {"w": jnp.ones(3)}, tr.POLICY: {"1": {"w": jnp.ones(3)}}}
    tx = method.wrap_optimizer(optax.adamw(0.1, weight_decay=0.1), params)
    opt_state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    moved = []
    for _ in range(3):
        updates, opt_state = tx.update(grads, opt_state, params)
        moved.append({k: float(jnp.abs(v["w"] if k == "bert" else v["1"]["w"]).sum())
                      for k, v in updates.items()})  # fmt: skip
    assert [m["bert"] for m in moved[:2]] == [0.0, 0.0] and moved[2]["bert"] > 0
    assert all(m[tr.POLICY] > 0 for m in moved)


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, shrink):
    workdir = tmp_path_factory.mktemp("teacher")
    loop.train_and_evaluate(shrink(finetune.get_config("model=mini,task=sst2,smoke=True")), workdir)
    return str(workdir / "export")


@pytest.mark.slow
def test_smoke_run_reports_tokens_flops_and_loyalty(tmp_path, tiny_teacher, shrink):
    config = shrink(
        token_reduction.get_config(f"teacher={tiny_teacher},task=sst2,smoke=True,alpha=2.0")
    )
    config.train.batch_size = 8  # x 8 copies; 4 steps: 2 policy (1 guided), 2 joint
    run = loop.create_train_state(config)
    assert run.method.name == "distill_kd_soft_ce+token_reduction"
    assert (run.method.methods[1].policy_steps, run.method.methods[1].guide_steps) == (2, 1)
    results = loop.train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["tokens_kept_mean"].keys() == {"1", "2"}
    assert 0 < saved["flops_ratio"] <= 1.0 and "label_loyalty" in results
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert any("rl_loss" in r for r in records)
    _, exported = models.load_pretrained(tmp_path / "export", head="classification")
    assert tr.POLICY not in exported
    # benchmarks/token_reduction.py measures the run from its export once the
    # checkpoints are gone (as a finished grid or reproduction leaves it).
    shutil.rmtree(tmp_path / "checkpoints")
    spec = importlib.util.spec_from_file_location(
        "tr_bench", REPO / "benchmarks/token_reduction.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main([str(tmp_path), "--batch", "32", "--repeats", "1"])
    measured = json.loads((tmp_path / "results.json").read_text())["reduced_runtime"]
    assert measured["metrics"] == pytest.approx(saved["metrics"])  # the run's own evaluation
    assert measured["tokens_kept_mean"] == pytest.approx(saved["tokens_kept_mean"])
    assert measured["batch32"]["reduced_ms"] > 0
