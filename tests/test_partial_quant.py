"""Partial quantization on a real MNIST model that full int8 breaks (see models/outlier_mnist.py)."""

import sys
from pathlib import Path

import onnx
import pytest

from edgekit.pipeline import Workspace, compress, prepare
from edgekit.settings import InputSpec, ModelSpec

BUDGET = 0.01


@pytest.fixture(scope="module")
def outlier(tmp_path_factory, model_cache):
    import os

    sys.path.insert(0, str(Path(__file__).parent))
    os.environ.setdefault("EDGEKIT_CACHE", str(model_cache))
    spec = ModelSpec(name="outlier-mnist", inputs=(InputSpec("input", (1, 1, 28, 28)),),
                     factory="models.outlier_mnist:build", calibration="models.outlier_mnist:calibration",
                     evaluation="models.outlier_mnist:evaluation")
    ctx = prepare(spec)
    home = tmp_path_factory.mktemp("partial")
    built = compress(ctx, ("onnx:int8-static", "onnx:int8-mixed"), Workspace(home, home / "r.db"),
                     max_accuracy_drop=BUDGET)
    return ctx, {v.recipe: v for v, _ in built}


@pytest.mark.slow
def test_int8_over_budget_is_flagged_and_partial_quantization_fixes_it(outlier):
    ctx, variants = outlier
    full, mixed = variants["onnx:int8-static"], variants["onnx:int8-mixed"]
    assert full.status == mixed.status == "ok", (full.error, mixed.error)
    assert ctx.evaluation.labels is not None and full.metrics["reference_accuracy"] > 0.85
    assert full.metrics["accuracy_drop"] > BUDGET and full.metrics["within_budget"] is False
    assert any("exceeds the budget" in w for w in full.warnings)

    assert mixed.metrics["accuracy_drop"] <= BUDGET and mixed.metrics["within_budget"] is True
    report = mixed.options["partial_quantization"]
    assert report["met_budget"] and report["budget"] == BUDGET
    assert 1 <= len(report["float_layers"]) < report["layers"], "some layers float, some still int8"
    assert all("costs" in f["reason"] for f in report["float_layers"])
    assert report["steps"][0]["accuracy_drop"] == pytest.approx(full.metrics["accuracy_drop"])
    # the artifact really is mixed: int8 QDQ pairs remain, and the float layers take float weights
    graph = onnx.load(mixed.path).graph
    assert any(n.op_type == "DequantizeLinear" for n in graph.node)
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    for f in report["float_layers"]:
        node = next(n for n in graph.node if n.name == f["layer"])
        assert node.input[1] not in dequantized, f"{f['layer']} kept float weights"
    assert mixed.size_bytes > full.size_bytes
