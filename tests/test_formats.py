"""TorchScript and TFLite builds of the example, with parity from each format's own runtime."""

import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.pipeline import Workspace, compress, prepare
from edgekit.settings import InputSpec, ModelSpec


@pytest.fixture(scope="module")
def formats(built, tmp_path_factory):
    ctx, _ = built
    home = tmp_path_factory.mktemp("formats")
    recipes = ("torchscript:fp32", "torchscript:int8", "tflite:fp32", "tflite:fp16", "tflite:int8-dynamic",
               "tflite:int8-static")
    return {v.recipe: v for v, _ in compress(ctx, recipes, Workspace(home, home / "r.db"))}


@pytest.mark.slow
def test_every_format_builds_with_parity_from_its_own_runtime(built, formats):
    _, base = built
    fp32_size = base["onnx:fp32"].size_bytes
    for recipe, v in formats.items():
        assert v.status == "ok", (recipe, v.error)
        assert v.metrics["top1_agreement"] >= 0.97, recipe
        assert v.metrics["parity_runtime"] == v.runtime and v.runtime in ("torch", "tflite")
        assert v.options["layer_merging"]["folded"] == [["0", "1"], ["3", "4"]]
        assert v.options["layer_merging"]["artifact_nodes"] > 0
    for recipe in ("torchscript:fp32", "tflite:fp32"):
        assert formats[recipe].metrics["max_abs_diff"] < 1e-3 and 0.8 < formats[recipe].size_bytes / fp32_size < 1.2
    for recipe in ("torchscript:int8", "tflite:int8-dynamic", "tflite:int8-static"):
        assert formats[recipe].size_bytes < fp32_size / 2.5, recipe
    assert 0.4 < formats["tflite:fp16"].size_bytes / fp32_size < 0.6


@pytest.mark.slow
def test_torchscript_is_marked_deprecated_and_int8_really_quantized(formats):
    import torch

    for recipe in ("torchscript:fp32", "torchscript:int8"):
        assert formats[recipe].options["deprecated_upstream"] is True and "deprecated" in formats[recipe].options["note"]
    graph = str(torch.jit.load(formats["torchscript:int8"].path).graph)
    assert "quantized::conv2d" in graph and "quantized::linear" in graph


@pytest.mark.slow
def test_tflite_records_io_dtype_and_int8_io_is_quantized_by_the_caller(built, formats):
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.compress.runtimes import quantize_array

    ctx, _ = built
    static = formats["tflite:int8-static"]
    assert static.options["input_dtype"] == ["int8"] and static.options["agent_quantizes_inputs"] is True
    assert formats["tflite:fp32"].options["input_dtype"] == ["float32"]
    assert formats["tflite:fp32"].options["io_layout"].startswith("NCHW")
    interp = Interpreter(model_path=static.path)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    scale, zero = detail["quantization"]
    x = ctx.evaluation.inputs["input"][:1]
    q = quantize_array(x, detail)
    assert q.dtype == np.int8 and np.abs((q.astype(np.float32) - zero) * scale - x).max() <= scale / 2 + 1e-6


def _tflite_weight_types(path) -> list[str]:
    """Per compute op, the stored type of its weight, read from the flatbuffer (not the interpreter)."""
    from ai_edge_litert import schema_py_generated as s

    model = s.ModelT.InitFromObj(s.Model.GetRootAs(Path(path).read_bytes(), 0))
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(s.TensorType).items() if not k.startswith("_")}
    graph = model.subgraphs[0]
    producer = {o: op for op in graph.operators for o in op.outputs}

    def op_name(op) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        return names[max(code.builtinCode, code.deprecatedBuiltinCode)]

    out = []
    for op in graph.operators:
        if op_name(op) in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"):
            w = op.inputs[1]
            src = producer.get(w)
            if src is not None and op_name(src) == "DEQUANTIZE":
                w = src.inputs[0]
            out.append(types[graph.tensors[w].type])
    return out


@pytest.mark.slow
def test_tflite_counts_what_is_quantized(formats):
    for recipe, weight in (("tflite:int8-dynamic", "INT8"), ("tflite:int8-static", "INT8"), ("tflite:fp16", "FLOAT16")):
        v = formats[recipe]
        q, stored = v.options["quantized"], _tflite_weight_types(v.path)
        assert stored == [weight] * 4, (recipe, stored)
        assert q["compute_ops"] == q["quantized_ops"] == len(stored) and q["fraction"] == 1.0, recipe
    assert formats["tflite:int8-static"].options["quantized"]["int8_tensors"] > \
        formats["tflite:int8-dynamic"].options["quantized"]["int8_tensors"], "static makes activations int8 too"
    assert "quantized" not in formats["tflite:fp32"].options


def test_missing_extra_names_the_pip_command(built, tmp_path, monkeypatch):
    ctx, _ = built
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # as if the extra were not installed
    (v, _), = compress(ctx, ("tflite:fp32",), Workspace(tmp_path, tmp_path / "r.db"))
    assert v.status == "failed" and "pip install 'edgekit[tflite]'" in v.error and "\n" not in v.error


def test_onnx_input_allows_only_onnx_recipes(built, tmp_path):
    _, base = built
    spec = ModelSpec(name="third-party", inputs=(InputSpec("input", (1, 1, 8, 8)),),
                     path=Path(base["onnx:fp32"].path), evaluation="edgekit.examples.digits:evaluation")
    ctx = prepare(spec)
    built_here = compress(ctx, ("torchscript:fp32", "onnx:fp16"), Workspace(tmp_path, tmp_path / "r.db"))
    (other, _), (fp16, _) = built_here
    assert other.status == "failed" and "only onnx:* recipes apply" in other.error
    assert fp16.status == "ok" and fp16.metrics["top1_agreement"] >= 0.99


@pytest.mark.slow
def test_executorch_fp32_and_int8_run_in_the_executorch_runtime(built, tmp_path):
    pytest.importorskip("executorch", reason="edgekit[executorch] not installed")
    ctx, base = built
    results = compress(ctx, ("executorch:fp32", "executorch:int8"), Workspace(tmp_path, tmp_path / "r.db"))
    (fp32, _), (int8, _) = results
    assert fp32.status == int8.status == "ok", (fp32.error, int8.error)
    assert fp32.metrics["max_abs_diff"] < 1e-3 and fp32.metrics["parity_runtime"] == "executorch"
    assert int8.metrics["top1_agreement"] >= 0.97 and int8.size_bytes < base["onnx:fp32"].size_bytes / 2.5
    q = int8.options["quantized"]  # 2 convs + 2 linears, all int8 inside the XNNPACK partition
    assert (q["compute_ops"], q["quantized_ops"], q["delegated_ops"], q["xnnpack_partitions"]) == (4, 4, 4, 1)
    assert Path(fp32.path).read_bytes()[4:8] == b"ET12", "an ExecuTorch flatbuffer program"
