"""int8 that says how much it quantized, on graphs shaped like other exporters' (tests/models/exported.py).

Every count edgekit records is checked against an independent walk of the saved file here, and
every artifact is run in onnxruntime: a count that cannot be recomputed from the bytes is not a figure.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgekit.compress.context import BuildContext
from edgekit.compress.parity import onnx_outputs
from edgekit.compress.store import file_sha256
from edgekit.model import Dataset
from edgekit.pipeline import Workspace, compress
from edgekit.settings import InputSpec, ModelSpec

sys.path.insert(0, str(Path(__file__).parent))
from models.exported import (IMAGE_SHAPE, VAD_HIDDEN, VAD_SAMPLES, constant_weights_onnx,  # noqa: E402
                             older_exporter_onnx, vad_feeds, vad_like_onnx)

INTEGER = {"QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul",
           "DynamicQuantizeLSTM", "QAttention"}
FLOAT_COMPUTE = {"Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN"}


def independent_count(path) -> tuple[int, int, int]:
    """(compute ops, quantized ones, compute ops inside subgraphs), walked from the saved file."""
    compute = quantized = nested = 0

    def walk(graph, produced: dict, depth: int) -> None:
        nonlocal compute, quantized, nested
        produced = {**produced, **{o: n.op_type for n in graph.node for o in n.output}}
        for n in graph.node:
            if n.op_type in INTEGER or n.op_type in FLOAT_COMPUTE:
                compute += 1
                nested += depth > 0
                weights = n.input[1:3] if n.op_type in ("LSTM", "GRU", "RNN") else n.input[:2]
                quantized += n.op_type in INTEGER or any(produced.get(w) == "DequantizeLinear" for w in weights)
            for a in n.attribute:
                for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs):
                    walk(g, produced, depth + 1)

    walk(onnx.load(str(path)).graph, {}, 0)
    return compute, quantized, nested


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def image_ctx(path: Path, name: str) -> BuildContext:
    """An ONNX-file spec with seeded image-like calibration and evaluation data."""
    rng = np.random.default_rng(0)
    spec = ModelSpec(name=name, inputs=(InputSpec("input", IMAGE_SHAPE),), path=path)
    calibration = Dataset({"input": rng.uniform(0, 1, (32, *IMAGE_SHAPE[1:])).astype(np.float32)})
    evaluation = Dataset({"input": rng.uniform(0, 1, (48, *IMAGE_SHAPE[1:])).astype(np.float32)})
    return BuildContext(spec, None, file_sha256(path), calibration, evaluation, onnx_outputs(path, evaluation, spec))


def build(ctx: BuildContext, recipes: tuple[str, ...], home: Path) -> dict:
    return {v.recipe: v for v, _ in compress(ctx, recipes, Workspace(home, home / "r.db"))}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exported")
    return {"constant": constant_weights_onnx(root / "constant.onnx"),
            "older": older_exporter_onnx(root / "older.onnx"), "vad": vad_like_onnx(root / "vad.onnx")}


@pytest.fixture(scope="module")
def vad(models, tmp_path_factory):
    """The VAD graph compressed with a hand-made context.

    Its `sr` is a scalar and `state` has batch on axis 1, which Dataset/batches (samples stacked on
    axis 0) cannot express yet, so there is no evaluation split (no parity) and the calibration
    split below is never iterated: int8-static fails its subgraph pre-check before calibrating.
    test_static_qdq_really_skips_the_if feeds ORT's quantizer real batches directly instead.
    """
    path = models["vad"]
    spec = ModelSpec(name="vad-like", inputs=(InputSpec("input", (1, VAD_SAMPLES)), InputSpec("sr", (), "int64"),
                                              InputSpec("state", (2, 1, VAD_HIDDEN))), path=path)
    feeds = vad_feeds(8)
    calibration = Dataset({k: np.stack([f[k] for f in feeds]) for k in feeds[0]})
    ctx = BuildContext(spec, None, file_sha256(path), calibration, None, None)
    home = tmp_path_factory.mktemp("vad")
    return path, build(ctx, ("onnx:int8-static", "onnx:int8-dynamic"), home)


# --------------------------------------------------------------------------- the If model


def test_vad_graph_behaves_like_a_vad(models):
    s = session(models["vad"])
    assert [i.shape for i in s.get_inputs()] == [[1, VAD_SAMPLES], [], [2, 1, VAD_HIDDEN]]
    (p16, state16), (p8, state8) = (s.run(None, vad_feeds(1, sr)[0]) for sr in (16000, 8000))
    assert p16.shape == (1, 1) and 0 < p16[0, 0] < 1 and state16.shape == (2, 1, VAD_HIDDEN)
    assert abs(p16[0, 0] - p8[0, 0]) > 1e-3 and np.abs(state16 - state8).max() > 1e-2, "each branch computes"
    top = {n.op_type for n in onnx.load(str(models["vad"])).graph.node}
    assert not top & FLOAT_COMPUTE, "all compute lives inside the If"


def test_vad_int8_dynamic_quantizes_the_subgraph_ops(vad):
    path, variants = vad
    v = variants["onnx:int8-dynamic"]
    assert v.status == "ok", v.error
    q = v.options["quantized"]
    assert (q["compute_ops"], q["quantized_ops"], q["in_subgraphs"]) == independent_count(v.path) == (6, 6, 6)
    assert q["fraction"] == 1.0 and q["subgraph_owners"] == ["If 'sample_rate_if'"]
    assert v.options["subgraphs"].startswith("quantized") and v.options["preprocessing"]["subgraph_weights"]["moved"]
    assert v.size_bytes < path.stat().st_size / 3
    reference, int8 = session(path), session(v.path)
    for sr in (16000, 8000):
        for feed in vad_feeds(4, sr, seed=5):
            want, got = reference.run(None, feed), int8.run(None, feed)
            assert abs(got[0] - want[0]).max() < 0.02 and abs(got[1] - want[1]).max() < 0.1, sr
    p16, p8 = (int8.run(None, vad_feeds(1, sr)[0])[0] for sr in (16000, 8000))
    assert abs(p16 - p8).max() > 1e-3, "the quantized file still has two branches"


def test_vad_int8_static_fails_naming_the_subgraphs(vad):
    _, variants = vad
    v = variants["onnx:int8-static"]
    assert v.status == "failed" and "nothing was quantized" in v.error
    assert "all 6 compute ops are inside If/Loop subgraphs" in v.error and "sample_rate_if" in v.error
    assert "Fix: onnx:int8-dynamic" in v.error and "\n" not in v.error


def test_static_qdq_really_skips_the_if(models, tmp_path):
    """The claim behind the failure above, checked by running ORT's quantizer with real batches."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    class Reader:
        def __init__(self) -> None:
            self.feeds = iter(vad_feeds(8) + vad_feeds(8, 8000))

        def get_next(self):
            return next(self.feeds, None)

    out = tmp_path / "static.onnx"
    quantize_static(str(models["vad"]), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    extra_options={"EnableSubgraph": True})
    assert independent_count(out) == (6, 0, 6), "no compute op quantized, subgraph option or not"
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node), "it did write int8 nodes"
    assert out.stat().st_size > models["vad"].stat().st_size, "and the 'int8' file is bigger than fp32"


def test_preprocessing_keeps_the_function(models, tmp_path):
    """Folding Constants, upgrading the opset and moving If weights into the branches change no output."""
    from edgekit.compress.onnxprep import prepare

    vad_pre, const_pre = tmp_path / "vad.onnx", tmp_path / "const.onnx"
    record = prepare(models["vad"], vad_pre, subgraph_weights=True)
    assert record["subgraph_weights"] == {"moved": 14, "copied": 0}
    top = onnx.load(str(vad_pre)).graph.initializer
    assert not [i.name for i in top if i.data_type == onnx.TensorProto.FLOAT], "every weight moved into its branch"
    for sr in (16000, 8000):
        feed = vad_feeds(1, sr)[0]
        for want, got in zip(session(models["vad"]).run(None, feed), session(vad_pre).run(None, feed)):
            assert np.allclose(want, got, atol=1e-5)
    record = prepare(models["constant"], const_pre, min_opset=13)
    assert record["constants_folded"] == 6 and record["opset"] == {"from": 12, "to": 13}
    graph = onnx.load(str(const_pre)).graph
    assert not [n for n in graph.node if n.op_type == "Constant"] and len(graph.initializer) >= 6
    x = np.random.default_rng(1).uniform(0, 1, (1, 3, 40, 24)).astype(np.float32)
    assert np.allclose(session(models["constant"]).run(None, {"input": x})[0],
                       session(const_pre).run(None, {"input": x})[0], atol=1e-5)


# --------------------------------------------------------------------------- Constant weights, older exporter


@pytest.fixture(scope="module")
def exported_variants(models, tmp_path_factory):
    out = {}
    for key in ("constant", "older"):
        ctx = image_ctx(models[key], key)
        home = tmp_path_factory.mktemp(key)
        out[key] = build(ctx, ("onnx:int8-static", "onnx:int8-dynamic"), home)
        out[key].update(build(ctx, ("onnx:int8-mixed",), home))  # its own run: it may equal int8-static
    return out


@pytest.mark.parametrize("key", ["constant", "older"])
@pytest.mark.parametrize("recipe", ["onnx:int8-static", "onnx:int8-dynamic", "onnx:int8-mixed"])
def test_exported_graphs_quantize_and_counts_hold(models, exported_variants, key, recipe):
    v = exported_variants[key][recipe]
    assert v.status == "ok", v.error
    q = v.options["quantized"]
    assert (q["compute_ops"], q["quantized_ops"], q["in_subgraphs"]) == independent_count(v.path) == (3, 3, 0)
    assert v.metrics["mean_cosine"] > 0.99, v.metrics
    prep = v.options["preprocessing"]
    source = onnx.load(str(models[key]))
    assert prep["constants_folded"] == sum(n.op_type == "Constant" for n in source.graph.node)
    per_channel = recipe != "onnx:int8-dynamic"
    assert prep["opset"] == {"from": source.opset_import[0].version, "to": 13 if per_channel else
                             source.opset_import[0].version}


def test_constant_weights_fold_and_dynamic_height_width_survive(models, exported_variants):
    assert exported_variants["constant"]["onnx:int8-static"].options["preprocessing"]["constants_folded"] == 6
    x = np.random.default_rng(3).uniform(0, 1, (1, 3, 48, 40)).astype(np.float32)  # not the example's 32x32
    want = session(models["constant"]).run(None, {"input": x})[0]
    for recipe in ("onnx:int8-static", "onnx:int8-dynamic"):
        got = session(exported_variants["constant"][recipe].path).run(None, {"input": x})[0]
        assert got.shape == want.shape == (1, 10) and np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_digits_int8_static_reports_all_its_compute_ops(built):
    _, variants = built
    v = variants["onnx:int8-static"]
    q = v.options["quantized"]
    assert q["compute_ops"] == q["quantized_ops"] == independent_count(v.path)[1] == 4 and q["fraction"] == 1.0
    assert variants["onnx:fp32"].options.get("quantized") is None, "fp32 claims nothing"


# --------------------------------------------------------------------------- unhappy paths, duplicates, table


def test_a_graph_without_compute_ops_is_not_an_int8_variant(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "relu", [x], [y])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    spec = ModelSpec(name="relu", inputs=(InputSpec("input", (1, 4)),), path=path)
    ctx = BuildContext(spec, None, file_sha256(path), None, None, None)
    v = build(ctx, ("onnx:int8-dynamic",), tmp_path / "home")["onnx:int8-dynamic"]
    assert v.status == "failed" and v.error.startswith("nothing was quantized: the graph has no compute op")


def test_int8_mixed_that_ends_all_float_is_dropped(models, tmp_path):
    # no int8 layer can meet a negative budget (set on the context: a recipe or profile refuses one)
    ctx = image_ctx(models["constant"], "constant").replace(max_accuracy_drop=-1.0)
    recipe = "onnx:int8-mixed"
    v = build(ctx, (recipe,), tmp_path)[recipe]
    assert v.status == "failed" and v.error.startswith("nothing was quantized: even with all 3 compute layers float")
    assert "Fix: use onnx:fp32" in v.error and not list(tmp_path.glob("cache/.build-*"))


def test_an_opset_that_cannot_be_upgraded_fails_in_one_line_naming_the_fix(tmp_path):
    """Per-channel QDQ needs opset 13; a Caffe2-era graph with the experimental Crop op cannot get there."""
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 2, 2])
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv"),
             helper.make_node("Crop", ["c"], ["output"], name="crop", border=[1, 1, 1, 1])]
    model = helper.make_model(helper.make_graph(nodes, "caffe2", [x], [y], initializer=[w]),
                              opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 4
    path = tmp_path / "old.onnx"
    onnx.save(model, str(path))
    spec = ModelSpec(name="old", inputs=(InputSpec("input", (1, 1, 4, 4)),), path=path)
    calibration = Dataset({"input": np.ones((2, 1, 4, 4), np.float32)})
    ctx = BuildContext(spec, None, file_sha256(path), calibration, None, None)
    v = build(ctx, ("onnx:int8-static",), tmp_path / "home")["onnx:int8-static"]
    assert v.status == "failed" and "\n" not in v.error
    assert "needs opset >= 13" in v.error and "from opset 9 failed" in v.error
    assert v.error.endswith("Fix: onnx:int8-static?per_channel=false, onnx:int8-mixed or onnx:int8-dynamic")


def test_entropy_equal_to_minmax_is_one_variant(models, tmp_path):
    ctx = image_ctx(models["constant"], "constant")
    recipes = ("onnx:int8-static", "onnx:int8-static?calibration=entropy")
    for attempt in ("built", "cached"):
        minmax, entropy = build(ctx, recipes, tmp_path).values()
        assert minmax.status == "ok", (attempt, minmax.error)
        assert entropy.sha256 == minmax.sha256, ("onnxruntime's Entropy calibration now differs from MinMax: "
                                                 "update the entropy row of README's recipe notes and this test")
        assert entropy.status == "failed" and entropy.error.startswith(
            "identical to onnx:int8-static (same sha256") and entropy.error.endswith("drop one of them"), attempt


def test_compress_table_shows_the_count(exported_variants):
    from rich.console import Console

    from edgekit.report.table import compress_table

    variants = exported_variants["constant"]
    console = Console(record=True, width=200)
    console.print(compress_table([(variants["onnx:int8-static"], False)]))
    text = console.export_text()
    assert "quantized" in text and "3/3 ops" in text
