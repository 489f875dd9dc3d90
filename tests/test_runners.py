"""Runners behind one interface: LiteRT (fp32 and int8 with quantized I/O), TorchScript, ORT providers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.agent.protocol import AgentError
from edgekit.agent.runners import make_runner

import tflite_models

RNG = np.random.default_rng(0)
W = RNG.standard_normal((8, 16)).astype(np.float32)
B = RNG.standard_normal(8).astype(np.float32)
X = RNG.standard_normal((1, 16)).astype(np.float32)
REF = X @ W.T + B
QUANT = {"in": (4 / 127, 0), "out": (float(np.abs(REF).max()) * 1.5 / 127, 3)}


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Path:
    from edgekit.bundle import write_agent

    return write_agent(tmp_path_factory.mktemp("agent") / "edgekit-agent.pyz")


def call(agent, *args):
    proc = subprocess.run([sys.executable, str(agent), *args], capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    return proc.returncode, json.loads(lines[0])


def test_litert_fp32_matches_the_reference(tmp_path):
    path = tflite_models.fully_connected(tmp_path / "fc.tflite", W, B)
    runner = make_runner("tflite")
    runner.load(str(path), 1)
    assert runner.input_specs() == [{"name": "input", "shape": [1, 16], "dtype": "float32"}]
    assert np.abs(runner.run({"input": X})[0] - REF).max() < 1e-4
    assert runner.describe()["package"] == "ai-edge-litert" and "xnnpack" in runner.describe()["delegate"]


def test_litert_int8_quantizes_inputs_and_dequantizes_outputs(tmp_path):
    path = tflite_models.fully_connected(tmp_path / "fc_int8.tflite", W, B, QUANT)
    runner = make_runner("tflite")
    runner.load(str(path), 1)
    assert runner.inputs[0]["dtype"] == np.int8 and runner.input_specs()[0]["dtype"] == "float32"
    out = runner.run({"input": X})[0]
    assert out.dtype == np.float32
    # error budget: one output step plus the input rounding carried through the weights
    budget = QUANT["out"][0] + QUANT["in"][0] / 2 * np.abs(W).sum(axis=1).max()
    assert np.abs(out - REF).max() < budget
    assert np.abs(out - REF).max() < 0.1 * np.abs(REF).max()
    # raw int8 feeds pass through untouched
    raw = np.clip(np.round(X / QUANT["in"][0]), -128, 127).astype(np.int8)
    assert np.array_equal(runner.run({"input": raw})[0], out)


@pytest.mark.parametrize("quant", [None, QUANT], ids=["fp32", "int8"])
def test_agent_benches_and_runs_litert_models(agent, tmp_path, quant):
    path = tflite_models.fully_connected(tmp_path / "m.tflite", W, B, quant)
    rc, doc = call(agent, "bench", "--artifact", str(path), "--runtime", "tflite", "--warmup-s", "0.02",
                   "--min-runs", "30", "--min-s", "0.05", "--idle-s", "0", "--power", "off", "--threads", "1")
    assert rc == 0, doc
    assert doc["runtime"]["name"] == "tflite" and doc["latency"]["n"] >= 30
    np.savez(tmp_path / "in.npz", input=np.stack([X, 0.5 * X]))
    rc, doc = call(agent, "run", "--artifact", str(path), "--runtime", "tflite", "--inputs", str(tmp_path / "in.npz"),
                   "--outputs", str(tmp_path / "out.npz"))
    assert rc == 0 and doc["batches"] == 2
    out = np.load(tmp_path / "out.npz")["output_0"]
    tol = 1e-4 if quant is None else 0.1 * np.abs(REF).max() * 2
    assert np.abs(out[0] - REF).max() < tol and np.abs(out[1] - (0.5 * X @ W.T + B)).max() < tol


def test_litert_corrupt_file_is_load_failed(agent, tmp_path):
    (tmp_path / "bad.tflite").write_bytes(b"TFL3 but not a model")
    rc, doc = call(agent, "bench", "--artifact", str(tmp_path / "bad.tflite"), "--runtime", "tflite", "--power", "off")
    assert rc != 0 and doc["error"]["kind"] == "load_failed"


def _torchscript(path: Path, with_spec: bool) -> Path:
    import torch

    lin = torch.nn.Linear(16, 8)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
        lin.bias.copy_(torch.from_numpy(B))
    scripted = torch.jit.script(lin.eval())
    extra = {"edgekit_inputs.json": json.dumps([{"name": "input", "shape": [1, 16], "dtype": "float32"}])}
    torch.jit.save(scripted, str(path), _extra_files=extra if with_spec else {})
    return path


def test_agent_benches_and_runs_torchscript(agent, tmp_path):
    path = _torchscript(tmp_path / "m.pt", with_spec=True)
    rc, doc = call(agent, "bench", "--artifact", str(path), "--runtime", "torch", "--warmup-s", "0.02",
                   "--min-runs", "20", "--min-s", "0.05", "--idle-s", "0", "--power", "off", "--threads", "1")
    assert rc == 0, doc
    assert doc["runtime"]["name"] == "torch" and doc["inputs"][0]["shape"] == [1, 16]
    np.savez(tmp_path / "in.npz", input=X[None])
    rc, doc = call(agent, "run", "--artifact", str(path), "--runtime", "torch", "--inputs", str(tmp_path / "in.npz"),
                   "--outputs", str(tmp_path / "out.npz"))
    assert rc == 0 and np.abs(np.load(tmp_path / "out.npz")["output_0"][0] - REF).max() < 1e-5


def test_torchscript_without_recorded_shapes_needs_inputs(agent, tmp_path):
    path = _torchscript(tmp_path / "m.pt", with_spec=False)
    rc, doc = call(agent, "bench", "--artifact", str(path), "--runtime", "torch", "--power", "off")
    assert rc != 0 and doc["error"]["kind"] == "bad_request"
    assert "the host passes --inputs; run the agent with --inputs FILE.npz" in doc["error"]["message"]
    np.savez(tmp_path / "in.npz", input=X[None])
    rc, doc = call(agent, "bench", "--artifact", str(path), "--runtime", "torch", "--inputs", str(tmp_path / "in.npz"),
                   "--warmup-s", "0.02", "--min-runs", "10", "--min-s", "0.02", "--idle-s", "0", "--power", "off")
    assert rc == 0, doc
    assert doc["inputs"] == [{"name": "input", "shape": [1, 16], "dtype": "float32"}]  # what it ran on


def test_onnxruntime_providers(built):
    import onnxruntime

    _, variants = built
    path = variants["onnx:fp32"].path
    runner = make_runner("onnxruntime", "cpu")
    runner.load(path, 1)
    assert runner.describe()["providers"] == ["CPUExecutionProvider"]
    runner = make_runner("onnxruntime", "auto")
    runner.load(path, 1)
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in onnxruntime.get_available_providers()]
    assert runner.describe()["providers"][-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" not in gpu:
        with pytest.raises(AgentError) as err:
            make_runner("onnxruntime", "cuda").load(path, 1)
        assert err.value.kind == "runtime_missing" and "CUDAExecutionProvider" in err.value.message
