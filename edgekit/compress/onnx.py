"""ONNX builders: export from torch (BN folded), fp16, and ONNX Runtime's int8 (dynamic, static QDQ).

Every builder takes (ctx, recipe, out) and returns the options worth recording in variant.json.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ..errors import CompressError, one_line
from ..graph import onnxruntime_refusal
from ..model import batches, example_inputs
from .context import BuildContext
from .isa import int8_types
from .merge import prepared_model
from .onnxprep import PER_CHANNEL_OPSET, prepare
from .quantized import onnx_counts, onnx_subgraph_reason, require_quantized
from .registry import Recipe

OPSET = 18
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# what onnxruntime's QDQ path cannot reach: quantize_model walks graph.node only, and so does the calibrator
STATIC_QUANTIZER = "onnxruntime's static QDQ quantizer (and its calibrator)"
STATIC_FIX = "onnx:int8-static?per_channel=false, onnx:int8-mixed or onnx:int8-dynamic"


@contextlib.contextmanager
def quiet():
    """ORT's calibrators print() progress and log warnings (Python and C++); keep stdout clean for --json."""
    import onnxruntime as ort

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)  # the sessions quant_pre_process and the calibrator open
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
        ort.set_default_logger_severity(2)  # onnxruntime's default (warning)


def export_torch(model, ctx: BuildContext, out: Path) -> None:
    """torch.onnx (dynamo) export of `model` with the spec's inputs, batch dimension dynamic if asked."""
    import torch

    args = tuple(torch.from_numpy(v) for v in example_inputs(ctx.spec).values())
    kwargs: dict[str, Any] = {}
    if getattr(ctx.spec, "dynamic_batch", False):
        batch = torch.export.Dim("batch", min=1, max=4096)
        # each input's own batch axis; a scalar input has none
        kwargs["dynamic_shapes"] = tuple(None if i.scalar else {i.batch_axis: batch} for i in ctx.spec.inputs)
    # torch.export cannot read a TorchScript module: those go through the TorchScript exporter
    scripted = isinstance(model, torch.jit.ScriptModule)
    if scripted:
        kwargs = {"dynamic_axes": {i.name: {i.batch_axis: "batch"} for i in ctx.spec.inputs if not i.scalar}
                  | {"output": {0: "batch"}}} \
            if kwargs else {}
        kwargs["dynamo"] = False
    else:
        kwargs.update(dynamo=True, external_data=False)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    chatter = io.StringIO()  # the exporter prints progress to stdout; keep --json output clean
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, args, str(out), input_names=[i.name for i in ctx.spec.inputs],
                              output_names=["output"], opset_version=OPSET, verbose=False, **kwargs)
    except Exception as exc:
        raise CompressError(f"torch.onnx.export failed: {one_line(exc)}") from None


def export(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    """The fp32 ONNX graph every ONNX recipe starts from (or the user's own ONNX file)."""
    if ctx.model is None:
        assert ctx.spec.path is not None
        shutil.copyfile(ctx.spec.path, out)
        return {"source": "user ONNX file", "layer_merging": {"applied": False, "reason": "ONNX input"}}
    model, merge = prepared_model(ctx, recipe)
    export_torch(model, ctx, out)
    import torch

    exporter = "torch.onnx (TorchScript exporter)" if isinstance(model, torch.jit.ScriptModule) else "torch.onnx dynamo"
    opts = {"exporter": exporter, "opset": OPSET, "layer_merging": merge}
    if getattr(ctx.spec, "dynamic_batch", False):
        opts["dynamic_batch"] = True
    return opts


def build_fp32(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    return export(ctx, recipe, out)


def build_fp16(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    """fp16 weights and arithmetic; inputs and outputs stay fp32 unless keep_io_types=false."""
    import onnx
    from onnxconverter_common import float16

    keep_io = recipe.value("keep_io_types")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        options = export(ctx, recipe, fp32)
        try:
            model = float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=keep_io,
                                                     disable_shape_infer=False)
            onnx.save(model, str(out))
        except Exception as exc:
            raise CompressError(f"onnxconverter-common float16 conversion failed: {one_line(exc)}") from None
        loads(out, "onnxconverter-common float16", "try onnx:fp16?keep_io_types=false, onnx:fp32 or onnx:int8-dynamic")
    options.update({"converter": "onnxconverter_common.float16", "keep_io_types": keep_io,
                    "io_dtype": "float32" if keep_io else "float16", "quantized": onnx_counts(out, "fp16")})
    counts = options["quantized"]
    if counts["compute_ops"] and not counts["quantized_ops"]:
        options["warnings"] = [f"no compute op has float16 weights (0/{counts['compute_ops']}): this fp16 file "
                               f"computes in float32"]
    return options


def loads(path: Path, what: str, fix: str) -> None:
    """A converter can write a graph ONNX Runtime rejects (e.g. float16 with If branches reading
    outer-scope weights): without evaluation data nothing else would load it before a device does."""
    refusal = onnxruntime_refusal(path)
    if refusal is not None:
        raise CompressError(f"{what} wrote a graph onnxruntime cannot load ({refusal}). Fix: {fix}")


def _types(recipe: Recipe, ctx: BuildContext) -> tuple[str, str]:
    if "types" in recipe.opts:
        return recipe.opts["types"], "set in the recipe"
    return int8_types(ctx.isa)


def _quant_types(types: str):
    from onnxruntime.quantization import QuantType

    act, weight = {"u8s8": ("QUInt8", "QInt8"), "u8s8-reduced": ("QUInt8", "QInt8"),
                   "u8u8": ("QUInt8", "QUInt8"), "s8s8": ("QInt8", "QInt8")}[types]
    return getattr(QuantType, act), getattr(QuantType, weight), types.endswith("-reduced")


def _short(prep: dict[str, Any]) -> str:
    """What pre-processing did, in a few words for an error line."""
    done = []
    if prep.get("constants_folded"):
        done.append(f"{prep['constants_folded']} Constant nodes folded into initializers")
    if prep["opset"]["from"] != prep["opset"]["to"]:
        done.append(f"opset {prep['opset']['from']} -> {prep['opset']['to']}")
    done.append(prep["shape_inference"].split(" (")[0] + " shape inference")
    return ", ".join(done)


def prepared(ctx: BuildContext, recipe: Recipe, tmp: Path, per_channel: bool, subgraph_weights: bool = False,
             fix: str = STATIC_FIX) -> tuple[Path, dict[str, Any]]:
    """The fp32 graph (exported, or the user's file) made quantizable (onnxprep.prepare): the
    pre-processed path and the options so far, its `preprocessing` record included."""
    fp32, pre = tmp / "fp32.onnx", tmp / "pre.onnx"
    options = export(ctx, recipe, fp32)
    with quiet():
        options["preprocessing"] = prepare(fp32, pre, PER_CHANNEL_OPSET if per_channel else None, subgraph_weights,
                                           fix)
    options["fp32_bytes"] = fp32.stat().st_size
    return pre, options


def checked(out: Path, options: dict[str, Any], reason: str | None = None, fix: str = STATIC_FIX) -> dict[str, Any]:
    """Count what the quantizer changed (options["quantized"]); nothing is a failure; a file no
    smaller than fp32 is a warning."""
    counts = onnx_counts(out)
    require_quantized(counts, reason, fix)
    options["quantized"] = counts
    size, fp32 = out.stat().st_size, options.pop("fp32_bytes", None)
    warnings_ = options.setdefault("warnings", [])
    if fp32 and size >= fp32:
        warnings_.append(f"the int8 file is not smaller than fp32 ({size} vs {fp32} bytes): only "
                         f"{counts['quantized_ops']}/{counts['compute_ops']} compute ops are int8")
    if not warnings_:
        options.pop("warnings")
    return options


def build_int8_dynamic(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    """ORT dynamic int8, subgraphs included: `EnableSubgraph` quantizes If/Loop bodies once their
    weights are local to them (onnxprep.localize_subgraph_weights)."""
    from onnxruntime.quantization import quantize_dynamic

    types, reason = recipe.value("types"), "set in the recipe" if "types" in recipe.opts else "default"
    _, weight, reduce_range = _quant_types(types)
    per_channel = recipe.value("per_channel")
    fix = "onnx:int8-static (calibrated) or keep onnx:fp32"
    with tempfile.TemporaryDirectory() as tmp:
        pre, options = prepared(ctx, recipe, Path(tmp), per_channel, subgraph_weights=True, fix=fix)
        before = onnx_counts(pre)
        subgraph_error = None

        def run(extra: dict[str, Any]) -> None:
            with quiet():
                quantize_dynamic(str(pre), str(out), per_channel=per_channel, reduce_range=reduce_range,
                                 weight_type=weight, extra_options=extra)

        try:
            try:
                run({"EnableSubgraph": True})
            except Exception as exc:
                if not before["in_subgraphs"]:
                    raise
                subgraph_error = one_line(exc)[:160]
                run({})  # the main graph alone, then say what stayed float
        except Exception as exc:
            raise CompressError(f"onnxruntime quantize_dynamic failed after pre-processing "
                                f"({_short(options['preprocessing'])}): {one_line(exc)}. Fix: {fix}") from None
    options.update({"quantization": "dynamic", "types": types, "types_reason": reason, "per_channel": per_channel,
                    "activation_type": "QUInt8 (computed at run time)", "weight_type": weight.name,
                    "reduce_range": reduce_range})
    why = None
    if before["in_subgraphs"]:
        options["subgraphs"] = ("quantized with onnxruntime's EnableSubgraph" if subgraph_error is None else
                                f"left float: onnxruntime's EnableSubgraph quantization failed ({subgraph_error})")
        if subgraph_error is not None:
            why = onnx_subgraph_reason(before, f"onnxruntime's dynamic quantizer could not quantize "
                                               f"({subgraph_error})")
    checked(out, options, why, fix)
    if {"Conv", "ConvTranspose"} & set(before["op_types"]):
        options.setdefault("warnings", []).append(
            "conv net: ORT dynamic int8 runs convolutions as ConvInteger, about 12x slower than fp32 on x86; "
            "prefer onnx:int8-static for CNNs")
    return options


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over the user's calibration split."""

    def __init__(self, ctx: BuildContext) -> None:
        self._feeds = list(batches(ctx.calibration, ctx.spec))
        self._it = iter(self._feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def static_settings(recipe: Recipe, ctx: BuildContext) -> dict[str, Any]:
    """The recorded static-quantization settings: recipe options, else ISA-aware defaults."""
    if ctx.calibration is None:
        raise CompressError("needs calibration data: set [data] calibration in the model spec")
    types, reason = _types(recipe, ctx)
    act, weight, reduce_range = _quant_types(types)
    calibration = recipe.value("calibration")
    settings = {"quant_format": "QDQ", "per_channel": recipe.value("per_channel"),
                "calibration": {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}[calibration],
                "types": types, "types_reason": reason, "activation_type": act.name, "weight_type": weight.name,
                "reduce_range": reduce_range, "calibration_samples": len(ctx.calibration)}
    if calibration == "percentile":
        settings["percentile"] = recipe.value("percentile")
    return settings


def static_precheck(pre: Path) -> dict[str, Any]:
    """The QDQ quantizer never reaches subgraph ops: when every compute op is in one, say so
    before calibrating (the count is the same before and after; onnx_counts proves it)."""
    counts = onnx_counts(pre)
    reason = onnx_subgraph_reason(counts, STATIC_QUANTIZER)
    if reason:
        require_quantized(counts, reason, "onnx:int8-dynamic, which quantizes subgraph weights")
    return counts


def subgraph_warning(counts: dict[str, Any]) -> list[str]:
    k = counts["in_subgraphs"]
    return [f"{k} compute ops inside If/Loop subgraphs stay float: {STATIC_QUANTIZER} skips subgraphs"] if k else []


def quantize(pre: Path, out: Path, ctx: BuildContext, settings: dict[str, Any],
             exclude: list[str] | None = None, prep: dict[str, Any] | None = None) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    extra: dict[str, Any] = {}
    if settings["calibration"] == "Percentile":
        extra["CalibPercentile"] = settings["percentile"]
    tried = f" after pre-processing ({_short(prep)})" if prep else ""
    try:
        with quiet():
            quantize_static(str(pre), str(out), _Reader(ctx), quant_format=QuantFormat.QDQ,
                            per_channel=settings["per_channel"],
                            activation_type=QuantType[settings["activation_type"]],
                            weight_type=QuantType[settings["weight_type"]], reduce_range=settings["reduce_range"],
                            calibrate_method=CalibrationMethod[settings["calibration"]],
                            nodes_to_exclude=exclude or None, extra_options=extra)
    except Exception as exc:
        raise CompressError(f"onnxruntime quantize_static failed{tried}: {one_line(exc)}. "
                            f"Fix: try {STATIC_FIX}") from None
    # the quantizer does not validate what it writes (opset-12 per-channel QDQ was rejected only at load)
    loads(out, f"onnxruntime quantize_static{tried}", f"try {STATIC_FIX}")


def build_int8_static(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    settings = static_settings(recipe, ctx)
    with tempfile.TemporaryDirectory() as tmp:
        pre, options = prepared(ctx, recipe, Path(tmp), settings["per_channel"])
        before = static_precheck(pre)
        quantize(pre, out, ctx, settings, prep=options["preprocessing"])
    options = {**settings, **options}
    options["warnings"] = subgraph_warning(before)
    return checked(out, options)
