"""The output contract: every output of an artifact, stacked over the calls, checked against a
bare runtime session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.compress.parity import onnx_outputs
from edgekit.compress.runtimes import outputs
from edgekit.errors import CompressError
from edgekit.model import Dataset
from edgekit.spec import InputSpec, ModelSpec

RNG = np.random.default_rng(3)
W = RNG.standard_normal((6, 4)).astype(np.float32)


def two_output_onnx(path: Path, batch: int | str = 2) -> Path:
    """y = x @ W (float [batch, 4]) and its argmax (int64 [batch]): two outputs of two dtypes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"]),
         helper.make_node("ArgMax", ["y"], ["k"], axis=1, keepdims=0)],
        "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [batch])],
        [numpy_helper.from_array(W, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def spec_for(path: Path, batch: int = 2) -> ModelSpec:
    return ModelSpec(name="two", inputs=(InputSpec("x", (batch, 6)),), path=path)


def test_onnx_gives_every_output_stacked_over_calls(tmp_path):
    import onnxruntime as ort

    path = two_output_onnx(tmp_path / "two.onnx")
    data = Dataset({"x": RNG.standard_normal((7, 6)).astype(np.float32)})  # 3 calls of 2; the tail is dropped
    outs = outputs("onnx", path, data, spec_for(path))
    assert [o.shape for o in outs] == [(3, 2, 4), (3, 2)]
    assert outs[0].dtype == np.float32 and outs[1].dtype == np.int64
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for i in range(3):
        y, k = session.run(None, {"x": data.inputs["x"][2 * i:2 * i + 2]})
        assert np.array_equal(outs[0][i], y) and np.array_equal(outs[1][i], k)
    same = onnx_outputs(path, data, spec_for(path))
    assert all(np.array_equal(a, b) for a, b in zip(outs, same)) and len(same) == 2


def test_an_output_that_changes_shape_between_calls_is_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    # NonZero's output length depends on the data: [2, count of non-zero x]
    graph = helper.make_graph([helper.make_node("NonZero", ["x"], ["where"])], "nz",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("where", TensorProto.INT64, [2, "n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "nz.onnx"
    onnx.save(model, str(path))
    data = Dataset({"x": np.array([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=np.float32)})
    spec = ModelSpec(name="nz", inputs=(InputSpec("x", (1, 4)),), path=path)
    with pytest.raises(CompressError, match="where"):
        outputs("onnx", path, data, spec)
