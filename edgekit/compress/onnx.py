"""ONNX builders: export from torch, and ONNX Runtime's static int8 QDQ quantization."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import CompressError
from ..model import batches, example_inputs
from .context import BuildContext

OPSET = 18


def _export(ctx: BuildContext, out: Path) -> dict[str, Any]:
    """Export the torch model (or copy a user's ONNX file). Returns options worth recording."""
    if ctx.model is None:
        assert ctx.spec.path is not None
        shutil.copyfile(ctx.spec.path, out)
        return {"source": "user ONNX file"}
    import torch

    args = tuple(torch.from_numpy(v) for v in example_inputs(ctx.spec).values())
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    chatter = io.StringIO()  # the exporter prints progress to stdout; keep --json output clean
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            torch.onnx.export(ctx.model, args, str(out), input_names=[i.name for i in ctx.spec.inputs],
                              output_names=["output"], dynamo=True, external_data=False,
                              opset_version=OPSET, verbose=False)
    except Exception as exc:
        raise CompressError(f"torch.onnx.export failed: {' '.join(str(exc).split())[:300]}") from None
    return {"exporter": "torch.onnx dynamo", "opset": OPSET}


def build_fp32(ctx: BuildContext, out: Path) -> dict[str, Any]:
    return _export(ctx, out)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over the user's calibration split."""

    def __init__(self, ctx: BuildContext) -> None:
        self._it = iter(list(batches(ctx.calibration, ctx.spec)))

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - part of the protocol, unused by MinMax
        pass


def build_int8_static(ctx: BuildContext, out: Path) -> dict[str, Any]:
    if ctx.calibration is None:
        raise CompressError("needs calibration data: set [data] calibration in the model spec")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    options = {"quant_format": "QDQ", "per_channel": True, "calibration": "MinMax",
               "activation_type": "QUInt8", "weight_type": "QInt8", "reduce_range": False,
               "calibration_samples": len(ctx.calibration)}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        pre = Path(tmp) / "pre.onnx"
        options.update(_export(ctx, fp32))
        try:
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(out), _Reader(ctx), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, reduce_range=False,
                            calibrate_method=CalibrationMethod.MinMax)
        except Exception as exc:
            raise CompressError(f"onnxruntime quantize_static failed: {' '.join(str(exc).split())[:300]}") from None
    return options
