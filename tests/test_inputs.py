"""Models as users have them: a pickled module, a TorchScript file; a dynamic batch dimension."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgekit.errors import SpecError
from edgekit.pipeline import Workspace, compress, prepare
from edgekit.config import load_model_spec
from edgekit.settings import InputSpec, ModelSpec

EVAL = "edgekit.examples.digits:evaluation"
CAL = "edgekit.examples.digits:calibration"


def test_dynamic_batch_key_is_validated(tmp_path):
    spec = tmp_path / "edgekit.toml"
    spec.write_text('[model]\nname = "m"\nfactory = "a:b"\ndynamic_batch = "yes"\n'
                    'inputs = [{ name = "input", shape = [1, 1, 8, 8] }]\n')
    with pytest.raises(SpecError, match=r"dynamic_batch: expected true or false.*Fix: write dynamic_batch = true"):
        load_model_spec(spec)
    spec.write_text(spec.read_text().replace('"yes"', "true"))
    assert load_model_spec(spec).dynamic_batch is True


def test_pickled_module_with_dynamic_batch(built, tmp_path):
    ctx, _ = built
    torch.save(ctx.model, tmp_path / "whole.pt")
    spec = ModelSpec(name="pickled", inputs=(InputSpec("input", (1, 1, 8, 8)),), path=tmp_path / "whole.pt",
                     calibration=CAL, evaluation=EVAL, dynamic_batch=True, allow_pickle=True)
    (v, _), = compress(prepare(spec), ("onnx:fp32",), Workspace(tmp_path, tmp_path / "r.db"))
    assert v.status == "ok", v.error
    assert v.options["dynamic_batch"] is True and v.metrics["top1_agreement"] == 1.0
    session = ort.InferenceSession(v.path, providers=["CPUExecutionProvider"])
    x = ctx.evaluation.inputs["input"][:5]
    with torch.no_grad():
        expected = ctx.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, atol=1e-4)


def test_torchscript_file_exports_to_onnx_and_torchscript(built, tmp_path):
    ctx, _ = built
    torch.jit.save(torch.jit.trace(ctx.model, torch.zeros(1, 1, 8, 8)), tmp_path / "model.ts")
    spec = ModelSpec(name="scripted", inputs=(InputSpec("input", (1, 1, 8, 8)),), path=tmp_path / "model.ts",
                     calibration=CAL, evaluation=EVAL)
    results = compress(prepare(spec), ("onnx:fp32", "torchscript:fp32"), Workspace(tmp_path, tmp_path / "r.db"))
    for v, _ in results:
        assert v.status == "ok", v.error
        assert v.metrics["top1_agreement"] == 1.0 and v.metrics["max_abs_diff"] < 1e-4
        assert "TorchScript input" in v.options["layer_merging"]["reason"]
    assert results[0][0].options["exporter"] == "torch.onnx (TorchScript exporter)"
