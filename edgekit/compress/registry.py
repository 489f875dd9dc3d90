"""Recipe names -> builders. Light on purpose: parsing a profile must not import torch.

A recipe is `[STEP+]...FORMAT:PRECISION`, e.g. `onnx:int8-static` or
`prune:0.5+kd+onnx:int8-static`. Technique steps transform a copy of the torch model, in order,
before the export step builds the artifact; parity and accuracy are still measured against the
ORIGINAL model, so every accuracy drop is the honest end-to-end one. A step is
`NAME[:VALUE][,KEY=VALUE...]`:

- `prune:0.5` structured channel pruning (torch-pruning DependencyGraph) of half the channels,
  then fine-tuning on `[data] training`; `prune-l1:`, `prune-l2:`, `prune-taylor:` pick the
  importance; options `importance`, `iterations` (1 = one-shot), `epochs`, `lr`.
- `sparsity:0.8` unstructured magnitude pruning (80 % zeros), then fine-tuning with the mask
  kept: the compressed file shrinks, latency does not unless the runtime has sparse kernels.
- `cluster:16` weight sharing: k-means per layer to 16 shared values, then centroid
  fine-tuning (`epochs`, 0 = none).
- `kd` knowledge distillation from the original model into the student the earlier steps made
  (or `[techniques] student`); options `temperature`, `alpha`, `epochs`, `lr`. It always also
  trains the same student without the teacher and reports both.

Defaults for every option come from the profile's `[techniques]` table (see `spec.py`).
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
    techniques: tuple = ()  # technique steps (edgekit.compress.techniques.Step) applied before export


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
    # --- technique steps (issue 7): `STEP+STEP+FORMAT:PRECISION`; the last part is the export recipe
    if "+" in text:
        from dataclasses import replace

        from .techniques import parse_steps

        *steps, export = [part.strip() for part in text.split("+")]
        base = parse_recipe(export)
        parsed = parse_steps(steps, text)
        return replace(base, name="+".join([s.text for s in parsed] + [base.name]), techniques=parsed)
    # --- end technique steps
    recipe = RECIPES.get(text.strip())
    if recipe is None:
        raise SpecError(f"unknown recipe {text!r}; known: {', '.join(RECIPES)}")
    return recipe
