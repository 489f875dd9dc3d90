"""Partial (mixed-precision) int8: keep the layers int8 hurts most in float until the budget holds.

Sensitivity is measured by quantizing one compute layer at a time (everything else float) and
comparing its outputs with the original on the evaluation data; then layers are returned to
float, most sensitive first, until the accuracy drop of the whole model fits the budget
(`[select] constraints.max_accuracy_drop`, or `budget=` in the recipe).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CompressError
from .context import BuildContext
from .onnx import COMPUTE_OPS, checked, prepared, quantize, static_precheck, static_settings, subgraph_warning
from .parity import fidelity_loss
from .registry import DEFAULT_BUDGET, Recipe
from .runtimes import outputs


def _score(path: Path, ctx: BuildContext) -> dict[str, Any]:
    m = ctx.compare(outputs("onnx", path, ctx.evaluation, ctx.spec))
    return {"accuracy_drop": fidelity_loss(m), "mean_abs_diff": m["mean_abs_diff"],
            "mean_cosine": m["mean_cosine"]}


def build_onnx_mixed(ctx: BuildContext, recipe: Recipe, out: Path) -> dict[str, Any]:
    import onnx

    if ctx.evaluation is None or ctx.reference is None:
        raise CompressError("needs evaluation data to measure layer sensitivity: set [data] evaluation")
    budget = recipe.value("budget")
    if budget is None:
        budget = ctx.max_accuracy_drop if ctx.max_accuracy_drop is not None else DEFAULT_BUDGET
    settings = static_settings(recipe, ctx)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pre, options = prepared(ctx, recipe, tmp, settings["per_channel"])
        before = static_precheck(pre)
        prep = options["preprocessing"]
        layers = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in COMPUTE_OPS]
        trial = tmp / "trial.onnx"
        quantize(pre, trial, ctx, settings, prep=prep)
        full = _score(trial, ctx)
        steps = [{"float_layers": 0, "accuracy_drop": full["accuracy_drop"]}]
        sensitivity: list[dict[str, Any]] = []
        kept: list[str] = []
        if full["accuracy_drop"] > budget:
            for layer in layers:  # quantize this layer alone: how much does it cost by itself?
                quantize(pre, trial, ctx, settings, exclude=[other for other in layers if other != layer], prep=prep)
                sensitivity.append({"layer": layer, **_score(trial, ctx)})
            sensitivity.sort(key=lambda s: (s["accuracy_drop"], s["mean_abs_diff"]), reverse=True)
            for s in sensitivity:
                kept.append(s["layer"])
                quantize(pre, trial, ctx, settings, exclude=kept, prep=prep)
                drop = _score(trial, ctx)["accuracy_drop"]
                steps.append({"float_layers": len(kept), "added": s["layer"], "accuracy_drop": drop})
                if drop <= budget:
                    break
        if layers and len(kept) == len(layers):  # all float: not an int8 variant
            last = steps[-1]["accuracy_drop"] * 100
            why = (f"all {len(layers)} compute layers had to stay float to get within the budget of "
                   f"{budget * 100:.2f} pts" if last <= budget * 100 else
                   f"even with all {len(layers)} compute layers float the drop is {last:.2f} pts > the budget of "
                   f"{budget * 100:.2f} pts (the remaining int8 ops cost accuracy)")
            raise CompressError(f"nothing was quantized: {why}. Fix: use onnx:fp32, or raise the budget "
                                f"(onnx:int8-mixed?budget=...)")
        quantize(pre, out, ctx, settings, exclude=kept or None, prep=prep)
    reasons = {s["layer"]: s for s in sensitivity}
    float_layers = [{"layer": name, "reason": (f"quantized alone it costs {reasons[name]['accuracy_drop'] * 100:.2f} "
                                               f"pts of accuracy (mean |diff| {reasons[name]['mean_abs_diff']:.3g})")}
                    for name in kept]
    options.update(settings)
    options["partial_quantization"] = {
        "budget": budget, "full_int8_accuracy_drop": full["accuracy_drop"], "layers": len(layers),
        "quantized_layers": len(layers) - len(kept), "float_layers": float_layers,
        "sensitivity": sensitivity, "steps": steps, "met_budget": steps[-1]["accuracy_drop"] <= budget,
        "data": "evaluation split (the budget is checked on the data it is reported on)",
    }
    options["warnings"] = subgraph_warning(before)
    return checked(out, options)
