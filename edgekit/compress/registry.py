"""Recipe names -> builders. Light on purpose: parsing a profile must not import torch.

A recipe is `[technique+]...format:precision`, e.g. `onnx:int8-static`. Techniques (pruning,
distillation, ...) will compose in front of the export step; today only export steps exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SpecError


@dataclass(frozen=True)
class Recipe:
    name: str
    format: str
    precision: str
    runtime: str  # what the agent needs on the device to run the artifact
    builder: str  # "module:function" under edgekit.compress, imported only when building
    suffix: str
    uses_calibration: bool = False
    summary: str = ""


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("onnx:fp32", "onnx", "fp32", "onnxruntime", "onnx:build_fp32", ".onnx",
               summary="torch.onnx export (dynamo), opset 18"),
        Recipe("onnx:int8-static", "onnx", "int8", "onnxruntime", "onnx:build_int8_static", ".onnx",
               uses_calibration=True,
               summary="ONNX Runtime static QDQ, per-channel weights, MinMax calibration on your data"),
    )
}


def parse_recipe(text: str) -> Recipe:
    recipe = RECIPES.get(text.strip())
    if recipe is None:
        raise SpecError(f"unknown recipe {text!r}; known: {', '.join(RECIPES)}")
    return recipe
