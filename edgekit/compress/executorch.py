"""ExecuTorch builders: a .pte with the XNNPACK delegate, fp32 and int8 (PT2E static, per-channel).

Needs the `executorch` extra (`pip install 'edgekit[executorch]'`). PT2E quantization lives in
torchao now (`torch.ao.quantization.quantize_pt2e` is gone in torch 2.13).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

from ..errors import CompressError
from ..model import batches, example_inputs
from .context import BuildContext
from .merge import prepared_model
from .quantized import executorch_counts, require_quantized
from .registry import Recipe


def _args(ctx: BuildContext):
    import torch

    return tuple(torch.from_numpy(v) for v in example_inputs(ctx.spec).values())


def _lower(module, ctx: BuildContext, out: Path) -> dict:
    """Write the .pte; returns what its XNNPACK partitions hold (quantized.executorch_counts)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(torch.export.export(module, _args(ctx)), partitioner=[XnnpackPartitioner()])
    counts = executorch_counts(edge)
    out.write_bytes(edge.to_executorch().buffer)
    return counts


def _model(ctx: BuildContext, recipe: Recipe):
    import torch

    model, merge = prepared_model(ctx, recipe)
    if isinstance(model, torch.jit.ScriptModule):
        raise CompressError("ExecuTorch needs a torch.export-able module, not a TorchScript file. "
                            "Fix: give the factory or a pickled module")
    return model.eval(), merge


@contextlib.contextmanager
def _guard(what: str):
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    except CompressError:
        raise
    except ImportError:
        raise
    except Exception as exc:
        raise CompressError(f"{what} failed: {' '.join(str(exc).split())[:300]}") from None


def build_fp32(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    model, merge = _model(ctx, recipe)
    with _guard("ExecuTorch export"):
        _lower(model, ctx, out)
    return {"delegate": "XNNPACK", "layer_merging": merge}


def build_int8(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    import torch

    if ctx.calibration is None:
        raise CompressError("needs calibration data: set [data] calibration in the model spec")
    model, merge = _model(ctx, recipe)
    with _guard("ExecuTorch PT2E int8"):
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                             get_symmetric_quantization_config)
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(torch.export.export(model, _args(ctx)).module(), quantizer)
        with torch.no_grad():
            for feeds in batches(ctx.calibration, ctx.spec):
                prepared(*[torch.from_numpy(feeds[i.name]) for i in ctx.spec.inputs])
        counts = _lower(convert_pt2e(prepared), ctx, out)
    require_quantized(counts, fix="use onnx:int8-static or tflite:int8-static")
    return {"delegate": "XNNPACK", "quantization": "PT2E static int8 (torchao), symmetric per-channel weights",
            "calibration_samples": len(ctx.calibration), "layer_merging": merge, "quantized": counts}
