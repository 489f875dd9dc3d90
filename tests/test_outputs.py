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
from edgekit.settings import InputSpec, ModelSpec

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


# ----------------------------------------------------------------------------- one runner table


def test_every_recipe_runtime_is_a_runner_of_the_agent():
    from edgekit.agent.runners import RUNNERS
    from edgekit.compress.registry import RECIPES
    from edgekit.compress.runtimes import RUNTIME_OF

    missing = {r.name: r.runtime for r in RECIPES.values() if r.runtime not in RUNNERS}
    assert not missing, f"recipes whose runtime no agent runner runs: {missing}"
    assert set(RUNTIME_OF) == {r.format for r in RECIPES.values()}


def test_the_probe_lists_every_runner_from_the_table():
    from edgekit.agent.probe import runtimes
    from edgekit.agent.runners import RUNNERS

    found = runtimes()
    assert list(found) == list(RUNNERS) == ["onnxruntime", "tflite", "torch", "executorch"]
    for name, entry in found.items():
        assert "error" not in entry and entry["version"], (name, entry)
    assert "CPUExecutionProvider" in found["onnxruntime"]["providers"]
    assert found["tflite"]["package"] == "ai-edge-litert"


def test_a_runtime_that_is_installed_but_broken_is_reported_not_dropped(tmp_path):
    """A real Python whose `onnxruntime` fails on import (as a numpy ABI mismatch does): the probe
    says so under the runner's name instead of dropping it or crashing."""
    import json
    import subprocess
    import sys

    shadow = tmp_path / "site" / "onnxruntime"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("numpy.core.multiarray failed to import")\n')
    code = "import json; from edgekit.agent.probe import runtimes; print(json.dumps(runtimes()))"
    env = {"PYTHONPATH": f"{tmp_path / 'site'}:{Path(__file__).resolve().parent.parent}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    found = json.loads(proc.stdout)
    assert "numpy.core.multiarray" in found["onnxruntime"]["error"] and found["onnxruntime"]["version"]
    assert "error" not in found["tflite"]


# ----------------------------------------------------------------------------- feeding


def test_onnxruntime_feeds_are_cast_to_each_inputs_own_type(tmp_path):
    """A float16-input model (onnx:fp16?keep_io_types=false) and an int64 input fed int32 data."""
    import onnx
    from onnx import TensorProto, helper

    from edgekit.agent.runners import make_runner

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["xf", "nf"], ["y"])],
        "cast", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 3]),
                 helper.make_tensor_value_info("n", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "cast.onnx"))
    runner = make_runner("onnxruntime", "cpu")
    runner.load(str(tmp_path / "cast.onnx"), 1)
    x = np.array([[1.5, -2.0, 0.25]], np.float32)
    out = runner.run({"x": x, "n": np.array(3, np.int32)})
    assert np.array_equal(out[0], 3 * x)
    assert np.array_equal(runner.bind({"n": np.array(2, np.int32), "x": x})()[0], 2 * x)
    assert np.array_equal(runner.run({"a": x, "b": np.array(3, np.int32)})[0], 3 * x)  # by position
    with pytest.raises(Exception, match=r"do not match the ONNX model's \['x', 'n'\]"):
        runner.run({"x": x})


def test_tflite_inputs_go_by_converter_mangled_name_then_position(tmp_path):
    import tflite_models

    from edgekit.agent.runners import make_runner

    path = tflite_models.sub_and_add(tmp_path / "two.tflite", ("serving_default_b:0", "serving_default_a:0"))
    runner = make_runner("tflite")
    runner.load(str(path), 1)
    a, b = np.ones((1, 4), np.float32), np.full((1, 4), 3.0, np.float32)
    # the interpreter's first input is b: "a" must not match "serving_default_..." by substring
    for feeds in ({"a": a, "b": b}, {"b": b, "a": a}):
        diff, total = runner.run(feeds)
        assert np.array_equal(diff, b - a) and np.array_equal(total, a + b)
    assert np.array_equal(runner.run({"p": a, "q": b})[0], a - b)  # unknown names: by position
    assert runner.output_names() == ["difference", "total"]


def test_tflite_dynamic_batch_is_resized_to_the_feeds(tmp_path):
    import tflite_models

    from edgekit.agent.runners import make_runner

    path = tflite_models.sub_and_add(tmp_path / "dyn.tflite", ("a", "b"), dynamic=True)
    runner = make_runner("tflite")
    runner.load(str(path), 1)
    assert runner.input_specs()[0]["shape"] == [1, 4]
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    diff, total = runner.run({"a": a, "b": np.ones_like(a)})
    assert diff.shape == total.shape == (3, 4) and np.array_equal(diff, a - 1)
    assert np.array_equal(runner.run({"a": a[:1], "b": a[:1]})[1], 2 * a[:1])  # and back


# ----------------------------------------------------------------------------- every format, every output


def three_outputs():
    """A torch module with a tuple of three outputs: logits, a per-sample sum and an int64 argmax."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(6, 4)

        def forward(self, x):
            y = self.fc(x)
            return y, torch.relu(x).sum(dim=1, keepdim=True), y.argmax(dim=1)

    return Net().eval()


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    import torch

    from edgekit.compress.context import BuildContext
    from edgekit.pipeline import Workspace, compress

    model = three_outputs()
    spec = ModelSpec(name="three", inputs=(InputSpec("x", (2, 6)),), factory="test_outputs:three_outputs")
    data = Dataset({"x": np.random.default_rng(1).standard_normal((6, 6)).astype(np.float32)})
    with torch.no_grad():
        ref = [[t.numpy() for t in model(torch.from_numpy(data.inputs["x"][i:i + 2]))] for i in (0, 2, 4)]
    reference = [np.stack([r[j] for r in ref]) for j in range(3)]
    ctx = BuildContext(spec, model, "three", data, data, reference)
    home = tmp_path_factory.mktemp("three")
    recipes = ("onnx:fp32", "torchscript:fp32", "tflite:fp32", "executorch:fp32")
    variants = {v.recipe: v for v, _ in compress(ctx, recipes, Workspace(home, home / "r.db"))}
    return spec, data, reference, variants


@pytest.mark.parametrize("recipe", ["onnx:fp32", "torchscript:fp32", "tflite:fp32", "executorch:fp32"])
def test_every_format_returns_every_output(three, recipe):
    spec, data, reference, variants = three
    v = variants[recipe]
    assert v.status == "ok", v.error
    outs = outputs(v.format, Path(v.path), data, spec)
    assert [o.shape for o in outs] == [(3, 2, 4), (3, 2, 1), (3, 2)]
    assert outs[0].dtype == outs[1].dtype == np.float32 and outs[2].dtype.kind == "i"  # int32 in TFLite
    for got, want in zip(outs, reference):
        assert np.abs(got.astype(np.float64) - want).max() < 1e-5


@pytest.mark.slow
def test_the_agent_benches_and_runs_executorch_on_local_with_the_hosts_outputs(built, tmp_path):
    """The digits example as ExecuTorch, through the real agent zipapp on the `local` target."""
    from edgekit.device import connect
    from edgekit.model import batches
    from edgekit.pipeline import Workspace, compress
    from edgekit.settings import BenchSettings, Target

    ctx, _ = built
    (v, _), = compress(ctx, ("executorch:fp32",), Workspace(tmp_path, tmp_path / "r.db"))
    assert v.status == "ok" and v.runtime == "executorch", v.error
    data = ctx.evaluation.head(16)
    host = outputs("executorch", Path(v.path), data, ctx.spec)
    target = Target(name="local", transport="local", workdir=str(tmp_path / "device"))
    with connect(target) as device:
        assert device.probe().usable("executorch")
        remote = device.push(v)
        doc = device.bench(v, remote, BenchSettings(warmup_s=0.02, min_runs=20, min_s=0.05, max_s=5, power="off"))
        on_device = device.run(v, remote, list(batches(data, ctx.spec)))
    assert doc["runtime"]["name"] == "executorch" and "XnnpackBackend" in doc["runtime"]["backends"]
    assert doc["latency"]["n"] >= 20 and doc["inputs"] == [{"name": "input_0", "shape": [1, 1, 8, 8],
                                                            "dtype": "float32"}]
    assert len(on_device) == len(host) == 1 and on_device[0].shape == host[0].shape == (16, 1, 10)
    assert np.array_equal(on_device[0], host[0])


def test_the_agent_runs_a_nested_output_torchscript_and_returns_every_output(tmp_path):
    """A TorchScript file without edgekit's input record, fed by position; its tuple outputs all
    come back from the agent's `run`, in order, the int64 one as int64."""
    import json
    import subprocess
    import sys

    import torch

    from edgekit.bundle import write_agent

    agent = write_agent(tmp_path / "edgekit-agent.pyz")
    path = tmp_path / "bare.pt"
    model = three_outputs()
    torch.jit.save(torch.jit.trace(model, torch.zeros(2, 6)), str(path))
    x = np.random.default_rng(2).standard_normal((3, 2, 6)).astype(np.float32)
    np.savez(tmp_path / "in.npz", data=x)  # not forward's argument name
    proc = subprocess.run([sys.executable, str(agent), "run", "--artifact", str(path), "--runtime", "torch",
                           "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and json.loads(proc.stdout)["batches"] == 3, proc.stdout + proc.stderr
    with np.load(tmp_path / "out.npz") as out:
        assert sorted(out.files) == ["output_0", "output_1", "output_2"]
        with torch.no_grad():
            want = [model(torch.from_numpy(b)) for b in x]
        for j in range(3):
            assert np.array_equal(out[f"output_{j}"], np.stack([w[j].numpy() for w in want]))
        assert out["output_2"].dtype == np.int64
