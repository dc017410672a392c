"""Notebooks run top to bottom in a real Jupyter kernel (smoke sizes, shared copies).

The quickstart runs in the default suite; the method-family notebooks (a few smoke
runs each: minutes) with `-m slow`."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]

# Each notebook: texts its outputs must show (a run's results, the plot).
EXPECTED = {
    "quickstart.ipynb": ("'task': 'mrpc'", "accuracy"),
    "pruning.ipynb": ("'method': 'prune_magnitude'", "'heads_kept':", "ms per batch"),
    "quantization.ipynb": ("'int8_storage': True", "'calibration': 'minmax'", "int8:"),
    "distillation.ipynb": ("'label_loyalty':", "'method': 'theseus_linear'", "emd/hidden_flow"),
    "dynamic_inference.ipynb": (
        "'method': 'early_exit_deebert'",
        "'method': 'early_exit_pabee'",
        "runtime exits = replayed exits: True",
        "x the latency of every layer",
        "'method': 'distill_kd_soft_ce+token_reduction'",
        "x the latency of every token",
    ),
    "search.ipynb": (
        "'method': 'lowrank'",
        "'method': 'ladabert+distill_kd_soft_ce'",
        "'method': 'general_distill'",
        "'method': 'autotinybert_supernet'",
        "held-out error",
        "extracted model = masked supernet: True",
    ),
}
# The shared checkpoint each method notebook picks here: the 3-layer one for the two
# with the most runs (the 6-layer one made them twice as slow).
LOCAL_MODEL = {"dynamic_inference.ipynb": "minilm-l3-h384", "search.ipynb": "minilm-l3-h384"}


def _execute(name, tmp_path, monkeypatch, backend="Agg"):
    monkeypatch.setenv("MPLBACKEND", backend)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    notebook = nbformat.read(REPO / "colabs" / name, as_version=4)
    NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    for expected in EXPECTED[name]:
        assert expected in text, (name, expected)
    return notebook, outputs


def test_notebook_executes(teacher_dir, tmp_path, monkeypatch):
    _execute("quickstart.ipynb", tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "pruning.ipynb",
        "quantization.ipynb",
        "distillation.ipynb",
        "dynamic_inference.ipynb",
        "search.ipynb",
    ],
)
def test_method_notebook_executes_and_plots(name, teacher_dir, tmp_path, monkeypatch):
    # The inline backend, as in Jupyter and Colab: plots become PNG outputs.
    inline = "module://matplotlib_inline.backend_inline"
    notebook, outputs = _execute(name, tmp_path, monkeypatch, backend=inline)
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot"
    # Each opens with the install cell, which installs nothing where bertjax is importable.
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert "pip" in first.source and 'find_spec("bertjax")' in first.source
    model = LOCAL_MODEL.get(name, "minilm-l6-h384")
    assert f"model: {model} data: tsv" in "".join(o.get("text", "") for o in first.outputs)
