"""A broken model or data file stops `edgekit compress` before anything is built: one exit-2 line
naming the file and what is wrong with it, and no artifact in the cache. Every file here is built
by the test (onnx.helper, numpy), as a user's exporter or script could have left it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_cli


def _graph(nodes, outputs=("y",), domains=()) -> onnx.ModelProto:
    """x [N, 64] -> ... -> y [N, 10], weights as an initializer, opset 17."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
    ys = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 10]) for name in outputs]
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32), "w")
    graph = helper.make_graph(nodes, "g", [x], ys, initializer=[w])
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


@pytest.fixture
def files(workdir: Path) -> Path:
    good = _graph([helper.make_node("MatMul", ["x", "w"], ["y"])])
    onnx.save(good, workdir / "good.onnx")
    raw = (workdir / "good.onnx").read_bytes()
    (workdir / "truncated.onnx").write_bytes(raw[: len(raw) // 2])
    (workdir / "random.onnx").write_bytes(np.random.default_rng(1).bytes(4096))
    onnx.save(_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("NoSuchOp", ["h"], ["y"])]),
              workdir / "unknown-op.onnx")
    onnx.save(_graph([helper.make_node("MatMul", ["x", "w"], ["h"])]), workdir / "dangling.onnx")
    onnx.save(_graph([helper.make_node("MatMul", ["x", "w"], ["h"]),
                      helper.make_node("Frobnicate", ["h"], ["y"], domain="com.example.custom")],
                     domains=["com.example.custom"]), workdir / "custom-op.onnx")

    rng = np.random.default_rng(2)
    np.savez(workdir / "ok.npz", x=rng.standard_normal((16, 64)).astype(np.float32))
    nan = rng.standard_normal((16, 64)).astype(np.float32)
    nan[3, :5], nan[7, 0] = np.nan, np.inf
    np.savez(workdir / "nan.npz", x=nan)
    np.savez(workdir / "objects.npz", x=np.array([{"a": 1}] * 16, dtype=object))
    np.save(workdir / "pickled.npy", np.array([object()] * 16, dtype=object), allow_pickle=True)
    np.savez(workdir / "empty.npz", x=np.zeros((0, 64), np.float32))
    np.savez(workdir / "two.npz", x=rng.standard_normal((2, 64)).astype(np.float32))
    return workdir


def _nothing_built() -> None:
    home = Path(os.environ["HOME"])
    built = [p for p in home.rglob("*") if p.suffix in (".onnx", ".tflite", ".pte", ".pt")]
    assert not built, built


def compress(model: str, *extra: str, shape: str = "x:1x64") -> tuple[int, str]:
    proc = run_cli("compress", "--model-path", model, "--input", shape, "--profile", "fast", *extra)
    return proc.returncode, proc.stderr.strip()


@pytest.mark.parametrize("model, words", [
    ("random.onnx", "random.onnx: not a readable ONNX file"),
    ("truncated.onnx", "truncated.onnx: not a readable ONNX file"),
    ("unknown-op.onnx", "unknown-op.onnx: the ONNX checker rejects it (No Op registered for NoSuchOp"),
    ("dangling.onnx", "dangling.onnx: the ONNX checker rejects it (Graph output 'y' is not an output of any node"),
    ("custom-op.onnx", "custom-op.onnx: onnxruntime cannot load it ("),
])
def test_a_broken_onnx_file_is_refused_before_anything_is_built(files, model, words):
    code, err = compress(model)
    assert code == 2 and words in err, err
    assert len(err.splitlines()) == 1 and "Fix: " in err and "Traceback" not in err
    _nothing_built()
    # The same file with evaluation data is refused the same way (not as a failed reference run).
    code, err = compress(model, "--evaluation", "ok.npz")
    assert code == 2 and words in err, err


@pytest.mark.parametrize("data, words", [
    ("objects.npz", "objects.npz: not a plain numeric .npz/.npy (Object arrays cannot be loaded when allow_pickle=False)"),
    ("pickled.npy", "pickled.npy: not a plain numeric .npz/.npy"),
    ("nan.npz", "(nan.npz): 'x' holds 6 NaN or infinite values"),
    ("empty.npz", "(empty.npz): inputs have different or zero sample counts (x: 0)"),
])
def test_bad_data_is_refused_naming_the_file(files, data, words):
    for flag in ("--calibration", "--evaluation"):
        code, err = compress("good.onnx", flag, data)
        assert code == 2 and words in err, err
        assert len(err.splitlines()) == 1 and "Fix: " in err and "Traceback" not in err
    _nothing_built()


def test_data_smaller_than_one_batch_is_refused(files):
    code, err = compress("good.onnx", "--calibration", "two.npz", shape="x:4x64")
    assert code == 2 and "(two.npz): 2 samples, fewer than one batch of 4. Fix: give at least 4 samples" in err, err
    _nothing_built()


def test_the_good_file_builds(files):
    """The control: the same graph and data, unbroken, compress (so the refusals above are the files')."""
    code, err = compress("good.onnx", "--calibration", "ok.npz", "--evaluation", "ok.npz")
    assert code == 0, err
