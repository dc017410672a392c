"""ONNX export: ONNX Runtime against bertjax on full, pruned and layer-dropped models."""

from collections import Counter

import jax
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("jax2onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from bertjax import models  # noqa: E402
from bertjax.export import onnx as onnx_export  # noqa: E402
from methods.base import compose  # noqa: E402
from methods.pruning.layer_drop import LayerDrop  # noqa: E402
from methods.pruning.structured import StructuredPruning  # noqa: E402

# (batch, sequence) pairs every dynamic-axes export is checked at.
SHAPES = [(3, 9), (5, 20)]
UNEVEN = models.BertConfig(
    vocab_size=96, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64
)


def _finalized(model, params, *methods):
    method = compose(list(methods))
    params, state = method.init(params, None)
    small_params, small_config = method.finalize(jax.device_get(params), state, model.config)
    return model.clone(config=small_config), small_params


def _prune(num_heads, scope="layer"):
    return StructuredPruning(
        num_heads=num_heads,
        head_sparsity=0.5,
        ffn_sparsity=0.5,
        importance="weight_norm",
        scope=scope,
        prune_step=0,
    )


def _drop(num_layers, layer):
    return LayerDrop(num_layers=num_layers, strategy="explicit", layers_to_drop=(layer,))


@pytest.fixture(scope="module")
def variants():
    tiny = models.load_pretrained("tiny", head="classification", num_labels=2)
    uneven = models.build(UNEVEN, head=None, seed=1)
    return {
        "tiny": tiny,
        # One head of two and a different FFN width in each layer.
        "pruned": _finalized(*tiny, _prune(2, scope="global")),
        "dropped": _finalized(*tiny, _drop(2, 0)),
        # 4 heads, pruned globally (heads per layer differ), then layer 1 dropped;
        # no head: the graph returns last_hidden_state and pooler_output.
        "uneven": _finalized(
            *uneven,
            _prune(4, scope="global"),
            _drop(3, 1),
        ),
    }


@pytest.fixture(scope="module")
def exported(variants, tmp_path_factory):
    directory = tmp_path_factory.mktemp("onnx")
    cache = {}

    def get(name):
        if name not in cache:
            model, params = variants[name]
            cache[name] = onnx_export.export_onnx(model, params, directory / f"{name}.onnx")
        return cache[name]

    return get


def _matmul_weight_shapes(path):
    graph = onnx.load(path).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    return Counter(
        shapes[n.input[1]] for n in graph.node if n.op_type == "MatMul" and n.input[1] in shapes
    )


def _initializer_bytes(path):
    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(path).graph.initializer)


def _kernel_shapes(params):
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return Counter(tuple(x.shape) for path, x in leaves if path[-1].key == "kernel")


def test_variants_are_structurally_compressed(variants):
    pruned = variants["pruned"][0].config
    assert [pruned.heads_in_layer(i) for i in range(2)] == [1, 1]
    assert len(set(pruned.intermediate_sizes)) == 2
    assert variants["dropped"][0].config.num_hidden_layers == 1
    uneven = variants["uneven"][0].config
    assert uneven.num_hidden_layers == 2
    assert len({uneven.heads_in_layer(i) for i in range(2)}) == 2
    assert len(set(uneven.intermediate_sizes)) == 2


@pytest.mark.parametrize("name", ["tiny", "pruned", "dropped", "uneven"])
def test_onnx_runtime_equals_bertjax(variants, exported, name):
    model, params = variants[name]
    path = exported(name)
    session = onnx_export.session(path)
    assert [i.name for i in session.get_inputs()] == list(onnx_export.INPUT_NAMES)
    assert all(i.shape == ["batch", "sequence"] for i in session.get_inputs())
    assert [o.name for o in session.get_outputs()] == list(onnx_export.output_names(model))
    for batch_size, seq_len in SHAPES:
        batch = onnx_export.random_batch(model.config.vocab_size, batch_size, seq_len, seed=seq_len)
        assert batch["attention_mask"].min() == 0  # padding is exercised
        diffs = onnx_export.max_abs_diff(model, params, session, batch)
        assert set(diffs) == set(onnx_export.output_names(model))
        assert max(diffs.values()) <= onnx_export.TOLERANCE, (batch_size, seq_len, diffs)
    # Physical structure: every weight matmul of the graph is one kernel of the
    # (pruned) params, with its (smaller) shape; nothing is zero-padded.
    assert _matmul_weight_shapes(path) == _kernel_shapes(params)


def test_fixed_shapes(variants, tmp_path):
    model, params = variants["uneven"]
    path = onnx_export.export_onnx(model, params, tmp_path / "fixed.onnx", batch=2, seq=7)
    session = onnx_export.session(path)
    assert all(i.shape == [2, 7] for i in session.get_inputs())
    batch = onnx_export.random_batch(model.config.vocab_size, 2, 7)
    assert max(onnx_export.max_abs_diff(model, params, session, batch).values()) <= 1e-4
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument):
        onnx_export.run(session, onnx_export.random_batch(model.config.vocab_size, 2, 9))


@pytest.mark.parametrize("name", ["tiny", "uneven"])
def test_int8_quantizes_every_weight_matmul(variants, exported, name):
    model, params = variants[name]
    path = exported(name)
    int8 = onnx_export.quantize_int8(path)
    assert int8 == path.with_suffix(".int8.onnx")
    ops = Counter(n.op_type for n in onnx.load(int8).graph.node)
    assert ops["MatMulInteger"] == sum(_kernel_shapes(params).values())
    assert _initializer_bytes(int8) < 0.4 * _initializer_bytes(path)
    batch = onnx_export.random_batch(model.config.vocab_size, 3, 16)
    reference = onnx_export.run(onnx_export.session(path), batch)
    diffs = onnx_export.max_abs_diff(model, params, onnx_export.session(int8), batch)
    for key, diff in diffs.items():
        scale = np.max(np.abs(reference[key]))
        assert 0 < diff <= 0.05 * scale, (key, diff, scale)


def _graph_session(nodes, initializers, x_shape, out_shapes):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, s) for i, s in out_shapes],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_gemm_and_einsum_become_matmul():
    rng = np.random.default_rng(0)
    weights = {
        "w": rng.normal(size=(4, 6)).astype(np.float32),
        "wt": rng.normal(size=(6, 4)).astype(np.float32),
        "b": rng.normal(size=(6,)).astype(np.float32),
        "zero_bias": np.zeros((), np.float32),
    }
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["x2"]),
        helper.make_node("Gemm", ["x2", "w", "b"], ["y0"]),
        helper.make_node("Gemm", ["x2", "wt", "b"], ["y1"], transB=1),
        helper.make_node("Gemm", ["x2", "w", "zero_bias"], ["y2"], beta=0.0),
        helper.make_node("Einsum", ["x", "w"], ["y3"], equation="abc,cd->abd"),
        helper.make_node("Einsum", ["x", "wt"], ["y4"], equation="abc,dc->abd"),
        helper.make_node("Gemm", ["x2", "w", "b"], ["y5"], alpha=2.0),  # left as Gemm
    ]
    weights["flat"] = np.array([-1, 4], np.int64)
    shapes = [(0, [6, 6]), (1, [6, 6]), (2, [6, 6]), (3, [2, 3, 6]), (4, [2, 3, 6]), (5, [6, 6])]
    model = _graph_session(nodes, weights, [2, 3, 4], shapes)
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)

    def outputs(proto):
        session = onnxruntime.InferenceSession(proto.SerializeToString())
        return session.run(None, {"x": x})

    before = outputs(model)
    rewritten = onnx_export.weight_matmuls_as_matmul(model)
    onnx.checker.check_model(rewritten)
    ops = Counter(n.op_type for n in rewritten.graph.node)
    assert ops["MatMul"] == 5 and ops["Gemm"] == 1 and ops["Einsum"] == 0
    # "zero_bias" (beta=0) and "wt" (read only transposed) are gone.
    assert {t.name for t in rewritten.graph.initializer} == {"w", "wt_transposed", "b", "flat"}
    for ours, theirs in zip(outputs(rewritten), before, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(before[0], x.reshape(6, 4) @ weights["w"] + weights["b"], atol=1e-5)


def test_command_line(variants, tmp_path, capsys):
    model, params = variants["uneven"]
    export_dir = models.save_pretrained(model, params, tmp_path / "export")
    out = tmp_path / "model.onnx"
    assert onnx_export.main([str(export_dir), str(out), "--int8", "--check-seq", "12"]) == 0
    printed = capsys.readouterr().out
    assert "fp32 max |ORT - bertjax|" in printed and "last_hidden_state" in printed
    assert out.with_suffix(".int8.onnx").is_file()
    # Exported from the zero-padded HF layout, the graph is physically pruned again.
    assert _matmul_weight_shapes(out) == _kernel_shapes(params)
