"""Real checkpoints against transformers PyTorch: parity, export, round trips."""

import json

import chex
import jax
import numpy as np
import pytest

from bertjax import models, paths
from bertjax.data import tokenizer as tokenization

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CHECKPOINTS = ["minilm-l6-h384", "minilm-l3-h384"]
PAIRS = [
    ("A man is eating food.", "A man is eating a piece of bread in the park on a sunny day."),
    ("The girl is carrying a baby.", "Hello"),
    ("Short.", "The quick brown fox jumps over the lazy dog near the river bank, twice."),
]


def _checkpoint(name):
    directory = paths.models_root() / name
    if not directory.is_dir():
        pytest.skip(f"{directory} not present")
    return directory


def _batch(directory):
    tok = tokenization.load_tokenizer(directory)
    enc = tok([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="np")
    assert (enc["attention_mask"] == 0).any(), "the batch must contain padding"
    return {k: enc[k].astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}


def _torch_inputs(batch):
    return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


def _max_diff_on_tokens(ours, theirs, mask):
    return float(np.abs(np.asarray(ours) - theirs)[mask.astype(bool)].max())


@pytest.mark.parametrize("name", CHECKPOINTS)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_hidden_states_match_transformers(name, attention):
    directory = _checkpoint(name)
    batch = _batch(directory)
    reference = transformers.BertModel.from_pretrained(
        directory, attn_implementation=attention, add_pooling_layer=False
    ).eval()
    with torch.no_grad():
        theirs = reference(**_torch_inputs(batch), output_hidden_states=True).hidden_states
    model, params = models.load_pretrained(directory)
    _, inter = model.apply({"params": params}, *batch.values(), collect=("embeddings", "hidden"))
    ours = [inter["embeddings"]] + [inter[f"hidden/{i}"] for i in range(len(theirs) - 1)]
    # Every hidden state at every real token; padded positions are not an output
    # (HF's own sdpa and eager paths differ there by ~4e-5).
    diffs = [
        _max_diff_on_tokens(a, b.numpy(), batch["attention_mask"])
        for a, b in zip(ours, theirs, strict=True)
    ]
    assert max(diffs) <= 1e-5, diffs


@pytest.mark.parametrize("head", ["classification", "regression"])
def test_export_loads_in_transformers_with_equal_logits(tmp_path, teacher_dir, head):
    batch = _batch(teacher_dir)
    model, params = models.load_pretrained(teacher_dir, head=head, num_labels=3)
    ours, _ = model.apply({"params": params}, *batch.values())
    out = models.save_pretrained(
        model,
        params,
        tmp_path / "export",
        tokenizer=teacher_dir,
        labels=["a", "b", "c"] if head == "classification" else None,
    )
    assert (out / "vocab.txt").exists()
    reference = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        theirs = reference(**_torch_inputs(batch)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours["logits"]), theirs, atol=1e-5)
    if head == "regression":
        assert reference.config.problem_type == "regression"
    else:
        assert reference.config.id2label == {0: "a", 1: "b", 2: "c"}

    # And back: our loader reads the export to identical params and the same head.
    model2, params2 = models.load_pretrained(out, head=head)
    assert model2.num_labels_out == model.num_labels_out
    chex.assert_trees_all_equal(jax.device_get(params), jax.device_get(params2))


def test_encoder_round_trip_through_transformers(tmp_path):
    directory = _checkpoint("minilm-l3-h384")
    model, params = models.load_pretrained(directory)
    assert "pooler" not in params["bert"]  # this checkpoint has none
    models.save_pretrained(model, params, tmp_path, tokenizer=directory)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["BertModel"]
    reference = transformers.BertModel.from_pretrained(tmp_path, add_pooling_layer=False).eval()
    batch = _batch(directory)
    with torch.no_grad():
        theirs = reference(**_torch_inputs(batch)).last_hidden_state.numpy()
    ours, _ = model.apply({"params": params}, *batch.values())
    assert _max_diff_on_tokens(ours["last_hidden_state"], theirs, batch["attention_mask"]) <= 1e-5


def test_pytorch_bin_with_bert_prefix(tmp_path, teacher_dir):
    reference = transformers.BertForSequenceClassification.from_pretrained(
        teacher_dir, num_labels=2
    ).eval()
    reference.config.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    assert any(k.startswith("bert.") for k in state)
    torch.save(state, tmp_path / "pytorch_model.bin")
    model, params = models.load_pretrained(tmp_path, head="classification")
    np.testing.assert_array_equal(
        np.asarray(params["classifier"]["kernel"]), state["classifier.weight"].numpy().T
    )
    batch = _batch(teacher_dir)
    with torch.no_grad():
        theirs = reference(**_torch_inputs(batch)).logits.numpy()
    ours, _ = model.apply({"params": params}, *batch.values())
    np.testing.assert_allclose(np.asarray(ours["logits"]), theirs, atol=1e-5)


def test_mlm_head_is_fresh_and_exports(tmp_path, teacher_dir):
    model, params = models.load_pretrained(teacher_dir, head="mlm")
    assert params["cls"]["predictions"]["bias"].shape == (30522,)
    models.save_pretrained(model, params, tmp_path)
    reference = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
    batch = _batch(teacher_dir)
    with torch.no_grad():
        theirs = reference(**_torch_inputs(batch)).logits.numpy()
    ours, _ = model.apply({"params": params}, *batch.values())
    mask = batch["attention_mask"].astype(bool)
    assert np.abs(np.asarray(ours["logits"]) - theirs)[mask].max() <= 1e-4


def test_names_resolve_under_models_root_and_errors_are_clear(teacher_dir, monkeypatch):
    model, params = models.load_pretrained("minilm-l6-h384")
    assert model.config.num_hidden_layers == 6
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        models.load_pretrained("no-such-model")
    with pytest.raises(ValueError, match="shape"):
        models.load_pretrained(teacher_dir, head=None, vocab_size=100)
