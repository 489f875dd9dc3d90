"""TFLite (LiteRT) builders: litert-torch converts the torch model to an fp32 .tflite without
TensorFlow; ai-edge-quantizer makes fp16, dynamic-range int8 and full static int8 from it.

Needs the `tflite` extra (`pip install 'edgekit[tflite]'`). I/O layout and dtype are read back
from the artifact with the LiteRT interpreter and recorded: int8 I/O means the agent must
quantize inputs with the tensor's scale and zero point.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CompressError, one_line
from ..model import batches, example_inputs
from .context import BuildContext
from .merge import prepared_model
from .quantized import require_quantized, tflite_counts
from .registry import Recipe


@contextlib.contextmanager
def _quiet():
    """The converters log and print progress; keep --json output and the progress bar clean."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _convert_fp32(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    import torch

    model, merge = prepared_model(ctx, recipe)
    if isinstance(model, torch.jit.ScriptModule):
        raise CompressError("litert-torch converts torch.export-able modules, not TorchScript files. "
                            "Fix: give the factory or a pickled module")
    with _quiet():
        import litert_torch

        args = tuple(torch.from_numpy(v) for v in example_inputs(ctx.spec).values())
        try:
            litert_torch.convert(model.eval(), args).export(str(out))
        except Exception as exc:
            raise CompressError(f"litert-torch conversion failed: {one_line(exc)}") from None
    opts: dict[str, Any] = {"converter": "litert-torch", "layer_merging": merge}
    if ctx.spec.dynamic_batch:
        opts["dynamic_batch"] = False
        opts["warnings"] = ["dynamic_batch is ONNX-only: this .tflite has the example's fixed batch size"]
    return opts


def _io(path: Path) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    ins, outs = interp.get_input_details(), interp.get_output_details()
    dtype = lambda d: np.dtype(d["dtype"]).name  # noqa: E731
    return {"io_layout": "NCHW (as the torch model; litert-torch inserts the transposes)",
            "input_dtype": [dtype(d) for d in ins], "output_dtype": [dtype(d) for d in outs],
            "input_quantization": [list(map(float, d["quantization"])) for d in ins],
            "agent_quantizes_inputs": any(np.dtype(d["dtype"]).kind in "iu" for d in ins)}


def _quantize(fp32: Path, out: Path, configure, calibration: dict | None = None) -> None:
    from ai_edge_quantizer import quantizer

    with _quiet():
        try:
            qt = quantizer.Quantizer(str(fp32))
            configure(qt)
            result = qt.calibrate(calibration) if calibration is not None else None
            qt.quantize(result).export_model(str(out), overwrite=True)
        except Exception as exc:
            raise CompressError(f"ai-edge-quantizer failed: {one_line(exc)}") from None


def _from_fp32(ctx: BuildContext, recipe: Recipe, out: Path, configure, summary: dict[str, Any],
               calibrate: bool = False, kind: str = "int8") -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.tflite"
        options = _convert_fp32(ctx, recipe, fp32)
        data = _calibration(ctx, fp32) if calibrate else None
        _quantize(fp32, out, configure, data)
    counts = tflite_counts(out, kind)
    if kind == "int8":
        require_quantized(counts, fix="check that ai-edge-quantizer supports the model's ops, or use onnx:int8-static")
    return {**options, **summary, "quantizer": "ai-edge-quantizer", **_io(out), "quantized": counts}


def _calibration(ctx: BuildContext, fp32: Path) -> dict:
    if ctx.calibration is None:
        raise CompressError("needs calibration data: set [data] calibration in the model spec")
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(fp32)).get_signature_runner()
    names = list(runner.get_input_details())
    if len(names) != len(ctx.spec.inputs):
        raise CompressError(f"the .tflite signature has inputs {names}, the spec {len(ctx.spec.inputs)}")
    feeds = [{n: f[i.name] for n, i in zip(names, ctx.spec.inputs)} for f in batches(ctx.calibration, ctx.spec)]
    return {"serving_default": feeds}


def build_fp32(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    return {**_convert_fp32(ctx, recipe, out), **_io(out)}


def _ops():
    from ai_edge_quantizer import qtyping

    return qtyping.TFLOperationName.ALL_SUPPORTED


def build_fp16(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    def configure(qt):
        qt.add_weight_only_config(regex=".*", operation_name=_ops(), num_bits=16,
                                  algorithm_key=AlgorithmName.FLOAT_CASTING)
    return _from_fp32(ctx, recipe, out, configure, {"quantization": "fp16 weights (float casting), fp32 compute"},
                      kind="fp16")


def build_int8_dynamic(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    from ai_edge_quantizer import recipe as recipes

    return _from_fp32(ctx, recipe, out, lambda qt: qt.load_quantization_recipe(recipes.dynamic_wi8_afp32()),
                      {"quantization": "dynamic range: int8 per-channel weights, activations quantized at run time"})


def build_int8_static(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    from ai_edge_quantizer import recipe as recipes

    return _from_fp32(ctx, recipe, out, lambda qt: qt.load_quantization_recipe(recipes.static_wi8_ai8()),
                      {"quantization": "full static int8: int8 weights and activations, min/max calibration",
                       "calibration_samples": len(ctx.calibration) if ctx.calibration is not None else 0},
                      calibrate=True)
