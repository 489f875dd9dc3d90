"""Warm runs derive nothing again: reference outputs and weights digests come from the derived
cache, keyed by content; the bundled examples read their data without scikit-learn; the commands
that only read the store or the device import no model framework."""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from edgekit.compress.build import variant_key
from edgekit.compress.registry import parse_recipe
from edgekit.errors import ModelError
from edgekit.model import weights_digest
from edgekit.pipeline import Workspace, compress, prepare
from edgekit.settings import InputSpec, ModelSpec

# Two outputs (scores and a pooled feature map) and BatchNorm buffers: the digest must cover
# buffers, and every output must be cached, not just the first. `forward` follows the weights'
# dtype, so a factory that changes precision still runs (and changes the digest).
NET = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 64, 10)

    def forward(self, x):
        f = torch.relu(self.bn(self.conv(x.to(self.conv.weight.dtype))))
        return self.head(f.flatten(1)), f.mean((2, 3))

def build():
    return Net(){suffix}
'''

# What edgekit must not import on a warm path: model frameworks and the examples' data loaders.
HEAVY = ("torch", "onnx", "onnxruntime", "onnxscript", "sklearn", "mlxtend", "executorch", "ai_edge_litert",
         "tensorflow")

# Runs the real CLI in this interpreter and writes down what it imported (stdout stays the CLI's).
IMPORTS_PROBE = """
import json, runpy, sys
out, sys.argv = sys.argv[1], ["edgekit", *sys.argv[2:]]
code = 0
try:
    runpy.run_module("edgekit", run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv_heavy)))
with open(out, "w") as fh:
    json.dump({"code": code, "heavy": heavy}, fh)
"""


def imports_of(tmp: Path, *args: str) -> dict:
    """Run `edgekit ARGS` in a fresh interpreter: its exit code and the heavy modules it imported."""
    import os
    import subprocess

    out = tmp / f"imports-{len(list(tmp.glob('imports-*')))}.json"
    code = IMPORTS_PROBE.replace("sys.argv_heavy", repr(json.dumps(HEAVY)))
    proc = subprocess.run([sys.executable, "-c", code, str(out), *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)
    assert out.is_file(), proc.stderr
    doc = json.loads(out.read_text())
    assert "Traceback" not in proc.stderr, proc.stderr
    return {**doc, "stdout": proc.stdout, "stderr": proc.stderr}


# --------------------------------------------------------------------------- a user's factory + checkpoint


@pytest.fixture
def net(workdir):
    """A factory module and a checkpoint in the project, evaluation data as .npz: (spec, module)."""
    (workdir / "warmnet.py").write_text(NET.format(suffix=""))
    sys.modules.pop("warmnet", None)
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))
    import torch

    module = importlib.import_module("warmnet")
    torch.manual_seed(0)
    model = module.build()
    with torch.no_grad():  # BatchNorm statistics that are not the defaults, so buffers count
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    torch.save(model.state_dict(), workdir / "net.pt")
    x = np.random.default_rng(0).standard_normal((24, 1, 8, 8)).astype(np.float32)
    np.savez(workdir / "eval.npz", x=x)
    spec = ModelSpec(name="warmnet", inputs=(InputSpec("x", (1, 1, 8, 8)),), factory="warmnet:build",
                     checkpoint=workdir / "net.pt", evaluation=str(workdir / "eval.npz"))
    yield spec, module
    sys.modules.pop("warmnet", None)


def recomputed(module, checkpoint: Path, x: np.ndarray) -> list[np.ndarray]:
    """The reference outputs computed here, without edgekit: one sample per call, stacked."""
    import torch

    model = module.Net()
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    model.eval()
    with torch.no_grad():
        calls = [model(torch.from_numpy(x[i:i + 1])) for i in range(len(x))]
    return [np.stack([c[j].numpy() for c in calls]) for j in range(2)]


def test_cached_reference_outputs_equal_a_fresh_computation(net, tmp_path):
    spec, module = net
    ws = Workspace(tmp_path / "host", tmp_path / "host" / "results.db")
    cold = prepare(spec, ws)
    assert cold.cached == () and cold.model_loaded
    warm = prepare(spec, ws)
    assert set(warm.cached) == {"weights digest", "reference outputs"}
    assert not warm.model_loaded, "nothing needed the model yet: it is not loaded"
    assert warm.model_digest == cold.model_digest == prepare(spec).model_digest

    x = np.load(spec.evaluation)["x"]
    expected = recomputed(module, spec.checkpoint, x)
    assert len(warm.reference) == len(expected) == 2
    for got, want in zip(warm.reference, expected):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)

    # The same keys as a full load: the cold run's artifact is served, still without the model.
    (first, c1), = compress(cold, ("onnx:fp32",), ws)
    (again, c2), = compress(warm, ("onnx:fp32",), ws)
    assert (c1, c2) == (False, True) and again.id == first.id and again.metrics == first.metrics
    assert not warm.model_loaded
    # A recipe not built yet loads the model on first use and keys it exactly as a fresh context.
    (ts, cached), = compress(warm, ("torchscript:fp32",), ws)
    assert not cached and ts.status == "ok", ts.error
    assert warm.model_loaded
    assert ts.cache_key == variant_key(parse_recipe("torchscript:fp32"), prepare(spec))
    assert ts.metrics["max_abs_diff"] < 1e-5


def test_a_changed_checkpoint_misses_and_a_same_content_copy_hits(net, tmp_path):
    import torch

    spec, module = net
    ws = Workspace(tmp_path / "host", tmp_path / "host" / "results.db")
    before = prepare(spec, ws)
    (built, _), = compress(before, ("onnx:fp32",), ws)

    copy = tmp_path / "elsewhere" / "same.pt"
    copy.parent.mkdir()
    shutil.copy(spec.checkpoint, copy)
    same = prepare(dataclasses.replace(spec, checkpoint=copy), ws)
    assert "weights digest" in same.cached and not same.model_loaded
    assert same.model_digest == before.model_digest
    assert compress(same, ("onnx:fp32",), ws)[0][1] is True

    state = torch.load(spec.checkpoint, weights_only=True)  # "retrained": one bias moved
    state["head.bias"] += 0.25
    torch.save(state, spec.checkpoint)
    after = prepare(spec, ws)
    assert after.cached == () and after.model_loaded
    assert after.model_digest != before.model_digest
    assert after.model_digest == weights_digest(after.model)
    x = np.load(spec.evaluation)["x"]
    for got, want in zip(after.reference, recomputed(module, spec.checkpoint, x)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(after.reference[0], before.reference[0])
    (rebuilt, cached), = compress(after, ("onnx:fp32",), ws)
    assert not cached and rebuilt.id != built.id


def test_a_factory_that_now_gives_other_weights_is_refused_not_cached_under_the_old_key(net, tmp_path, workdir):
    spec, _ = net
    ws = Workspace(tmp_path / "host", tmp_path / "host" / "results.db")
    prepare(spec, ws)
    # Same checkpoint file, but the factory now builds a float64 model: other weight bytes.
    (workdir / "warmnet.py").write_text(NET.format(suffix=".double()"))
    sys.modules.pop("warmnet", None)
    importlib.invalidate_caches()
    warm = prepare(spec, ws)
    assert "weights digest" in warm.cached and not warm.model_loaded
    refused = r"checkpoint .*net.pt now gives other weights.*the code that builds it changed\. Fix: run the command"
    with pytest.raises(ModelError, match=refused):
        compress(warm, ("torchscript:fp32",), ws)
    assert not list((tmp_path / "host" / "cache").glob(f"{variant_key(parse_recipe('torchscript:fp32'), warm)}*"))
    again = prepare(spec, ws)  # the record was dropped: loaded, hashed and recorded afresh
    assert again.model_loaded and "weights digest" not in again.cached
    assert again.model_digest != warm.model_digest


def test_an_onnx_model_reference_is_cached_and_matches_onnxruntime(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    w = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("ReduceMax", ["y"], ["m"], keepdims=0)],
        "two_outputs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, [])],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.flatten())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "m.onnx")
    x = np.random.default_rng(2).standard_normal((10, 6)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x)
    spec = ModelSpec(name="m", inputs=(InputSpec("x", (2, 6)),), path=tmp_path / "m.onnx",
                     evaluation=str(tmp_path / "eval.npz"))
    ws = Workspace(tmp_path / "host", tmp_path / "host" / "r.db")
    assert prepare(spec, ws).cached == ()
    warm = prepare(spec, ws)
    assert warm.cached == ("reference outputs",) and warm.output_names == ("y", "m")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    calls = [session.run(None, {"x": x[i:i + 2]}) for i in range(0, 10, 2)]
    for j, got in enumerate(warm.reference):
        np.testing.assert_allclose(got, np.stack([c[j] for c in calls]), rtol=1e-6)


def test_an_onnx_file_is_checked_once_per_content(tmp_path, monkeypatch):
    """Without evaluation data nothing else runs the file: the checker and the onnxruntime load run
    on its first prepare, and a warm one (same bytes, same versions) does not pay for them again."""
    import onnx
    from onnx import TensorProto, helper

    from edgekit import pipeline

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "r.onnx")
    spec = ModelSpec(name="r", inputs=(InputSpec("x", (1, 4)),), path=tmp_path / "r.onnx")
    ws = Workspace(tmp_path / "host", tmp_path / "host" / "r.db")
    checked: list[Path] = []
    real = pipeline.check_onnx
    monkeypatch.setattr(pipeline, "check_onnx", lambda path: (checked.append(path), real(path)))
    prepare(spec, ws)
    prepare(spec, ws)
    assert checked == [tmp_path / "r.onnx"]
    prepare(spec, Workspace(tmp_path / "other", tmp_path / "other" / "r.db"))  # another cache: checked there
    assert len(checked) == 2

def test_a_damaged_reference_entry_is_recomputed(net, tmp_path):
    spec, _ = net
    ws = Workspace(tmp_path / "host", tmp_path / "host" / "results.db")
    cold = prepare(spec, ws)
    (entry,) = (tmp_path / "host" / "cache" / "reference").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    again = prepare(spec, ws)
    assert "reference outputs" not in again.cached
    for got, want in zip(again.reference, cold.reference):
        np.testing.assert_array_equal(got, want)
    assert "reference outputs" in prepare(spec, ws).cached


# --------------------------------------------------------------------------- the bundled examples


def test_example_data_cache_equals_the_splits_it_was_made_from(tmp_path, monkeypatch):
    from edgekit.examples import digits

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    made = digits._make_splits()
    first = digits._splits()  # makes and caches
    path = tmp_path / f"{digits.NAME}-v{digits.VERSION}-data.npz"
    assert path.is_file()
    cached = digits._splits()
    for splits in (first, cached):
        assert set(splits) == set(made)
        for name, (x, y) in made.items():
            np.testing.assert_array_equal(splits[name][0], x)
            np.testing.assert_array_equal(splits[name][1], y)
            assert splits[name][0].dtype == x.dtype and splits[name][1].dtype == y.dtype
    path.write_bytes(b"not an npz")  # damaged: made again, not served
    np.testing.assert_array_equal(digits.evaluation()[0], made["evaluation"][0])
    assert np.load(path)["evaluation.x"].shape == made["evaluation"][0].shape


def test_warm_compress_of_the_bundled_example_imports_neither_sklearn_nor_torch(workdir, tmp_path):
    first = run_cli("compress", "--profile", "fast", "--json")
    assert first.returncode == 0, first.stderr
    ids = [v["id"] for v in json.loads(first.stdout)["variants"]]
    second = imports_of(tmp_path, "compress", "--profile", "fast", "--json")
    assert second["code"] == 0, second["stderr"]
    assert "sklearn" not in second["heavy"], "cached data is read without scikit-learn"
    third = imports_of(tmp_path, "compress", "--profile", "fast", "--json")
    assert third["code"] == 0 and third["heavy"] == [], third  # the weights file's digest is known now
    variants = json.loads(third["stdout"])["variants"]
    assert [v["id"] for v in variants] == ids and all(v["cached"] for v in variants)


# --------------------------------------------------------------------------- read-only commands


def test_store_and_device_commands_import_no_model_framework(workdir, tmp_path, built):
    from report_store import captured
    from edgekit.device import connect
    from edgekit.config import load_target

    captured(workdir / ".edgekit" / "results.db")  # real runs on `local` and `local2`, captured
    targets = sorted(r[0] for r in sqlite3.connect(workdir / ".edgekit" / "results.db").execute(
        "SELECT DISTINCT target FROM probes"))
    assert targets == ["local", "local2"]
    _, variants = built
    with connect(load_target("local")) as device:  # two real deployments, so rollback has work
        for v in (variants["onnx:fp32"], variants["onnx:int8-static"]):
            device.install(v.model, v, device.push(v))
            device.activate(v.model, v.id)

    commands = [
        ("report", "--json"), ("report", "--table"), ("report", "-o", str(tmp_path / "r.html")),
        ("compare", "--target", "local", "--target", "local2"),
        ("check", "--target", "local", "--max-p90-ms", "1000"),
        ("status", "--target", "local"), ("status", "--target", "local", "--json"),
        ("rollback", "--target", "local", "--json"),
        ("targets", "list"), ("targets", "show", "local"),
    ]
    for args in commands:
        doc = imports_of(tmp_path, *args)
        assert doc["code"] == 0, (args, doc["stderr"])
        assert doc["heavy"] == [], (args, doc["heavy"])
    status = json.loads(imports_of(tmp_path, "status", "--target", "local", "--json")["stdout"])
    assert status["models"]["digits-cnn"]["current"] == variants["onnx:fp32"].id, "the rollback happened"
