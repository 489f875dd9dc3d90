"""TorchScript builders: fp32 (trace + freeze) and int8 (FX graph mode, x86/fbgemm).

TorchScript is deprecated upstream (torch.jit raises DeprecationWarning in torch 2.13; PyTorch
points edge users to ExecuTorch), but older C++ apps still load it, so the variant says so.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

from ..errors import CompressError
from ..model import batches, example_inputs
from .context import BuildContext
from .merge import prepared_model
from .registry import Recipe

DEPRECATION = ("TorchScript is deprecated upstream (torch.jit warns since 2.x; ExecuTorch is PyTorch's edge "
               "runtime): fine for existing C++ apps that load it, not for new deployments")


def _example(ctx: BuildContext):
    import torch

    return tuple(torch.from_numpy(v) for v in example_inputs(ctx.spec).values())


def _trace_freeze(model, ctx: BuildContext, out: Path) -> None:
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            scripted = model if isinstance(model, torch.jit.ScriptModule) else torch.jit.trace(model, _example(ctx))
            frozen = torch.jit.freeze(scripted.eval())
            torch.jit.save(frozen, str(out))
        except Exception as exc:
            raise CompressError(f"torch.jit trace/freeze failed: {' '.join(str(exc).split())[:300]}") from None


def _common(merge: dict[str, Any]) -> dict[str, Any]:
    return {"deprecated_upstream": True, "note": DEPRECATION, "layer_merging": merge}


def build_fp32(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    model, merge = prepared_model(ctx, recipe)
    _trace_freeze(model, ctx, out)
    return {"method": "torch.jit.trace + torch.jit.freeze", **_common(merge)}


def build_int8(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    import torch

    if ctx.calibration is None:
        raise CompressError("needs calibration data: set [data] calibration in the model spec")
    model, merge = prepared_model(ctx, recipe)
    if isinstance(model, torch.jit.ScriptModule):
        raise CompressError("FX int8 needs a Python torch module, not a TorchScript file. "
                            "Fix: give the factory or a pickled module, or use torchscript:fp32")
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings(), torch.no_grad(), contextlib.ExitStack():
        warnings.simplefilter("ignore")
        previous = torch.backends.quantized.engine
        try:
            torch.backends.quantized.engine = "x86"
            prepared = prepare_fx(model.eval(), get_default_qconfig_mapping("x86"), _example(ctx))
            for feeds in batches(ctx.calibration, ctx.spec):
                prepared(*[torch.from_numpy(feeds[i.name]) for i in ctx.spec.inputs])
            quantized = convert_fx(prepared)
        except Exception as exc:
            raise CompressError(f"FX int8 quantization failed: {' '.join(str(exc).split())[:300]}") from None
        finally:
            torch.backends.quantized.engine = previous
    _trace_freeze(quantized, ctx, out)
    return {"method": "torch.ao FX graph mode (prepare_fx / convert_fx), traced and frozen",
            "backend": "x86 (fbgemm)", "qconfig": "default x86: per-channel int8 weights, uint8 activations",
            "calibration_samples": len(ctx.calibration), **_common(merge)}
