"""Recipe names -> builders. Light on purpose: parsing a profile must not import torch.

A recipe is `format:precision`, optionally followed by options in URL query form:

    onnx:int8-static
    onnx:int8-static?calibration=entropy&types=u8u8&per_channel=false
    onnx:int8-mixed?budget=0.005

Options are validated here (unknown option or value: one line naming the allowed ones), sorted
into a canonical name (so `a=1&b=2` and `b=2&a=1` are the same variant and the same cache entry)
and handed to the builder as `recipe.opts`. Every recipe accepts `fold_bn` (default true): fold
BatchNorm into the preceding convolution / linear layer before export.

Technique steps may go in front: a recipe is `[STEP+]...FORMAT:PRECISION[?OPTIONS]`, e.g. `onnx:int8-static` or
`prune:0.5+kd+onnx:int8-static`. Technique steps transform a copy of the torch model, in order,
before the export step builds the artifact; parity and accuracy are still measured against the
ORIGINAL model, so every accuracy drop is the honest end-to-end one. A step is
`NAME[:VALUE][,KEY=VALUE...]`:

- `prune:0.5` structured channel pruning (torch-pruning DependencyGraph) of half the channels,
  then fine-tuning on `[data] training`; `prune-l1:`, `prune-l2:`, `prune-taylor:` pick the
  importance; options `importance`, `iterations` (1 = one-shot), `epochs`, `lr`.
- `merge:0.3` neuron merging (Kim et al., NeurIPS 2020): removes the same kind of channels as
  `prune`, but first folds each into its most similar kept channel (cosine on the BatchNorm-folded
  filter; the least-squares scale goes into the next layer's weights), so accuracy holds without
  data or training; exact for scaled copies through ReLU / max-pooling / residual adds, bounded
  through ReLU6, and plain pruning (said so in the report) where neither holds. Options
  `criterion` (`cosine`: the channels merging reproduces best go first; `l2`: the channels
  `prune` removes), `epochs` (default 0, whatever `[techniques] epochs` says), `lr`.
- `sparsity:0.8` unstructured magnitude pruning (80 % zeros), then fine-tuning with the mask
  kept: the compressed file shrinks, latency does not unless the runtime has sparse kernels.
- `cluster:16` weight sharing: k-means per layer to 16 shared values, then centroid
  fine-tuning (`epochs`, 0 = none).
- `kd` knowledge distillation from the original model into the student the earlier steps made
  (or `[techniques] student`); options `temperature`, `alpha`, `epochs`, `lr`. It always also
  trains the same student without the teacher and reports both.

Every step that trains also takes `augment` (`none`, `shift`: up to 2 px, `affine`: also up to
10 degrees and 0.9..1.1 scale; image inputs only; in kd the teacher labels the transformed
images) and `schedule` (`constant` or `cosine` learning rate), e.g.
`prune:0.5+kd:epochs=60,augment=affine,schedule=cosine+onnx:int8-static`.

Defaults for every option come from the profile's `[techniques]` table (see `settings.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..errors import SpecError

BOOL = ("true", "false")
CALIBRATION = ("minmax", "entropy", "percentile")
# activation x weight types of ONNX Runtime's int8 kernels; "-reduced" is 7-bit weights (reduce_range)
TYPES = ("u8s8", "u8s8-reduced", "u8u8", "s8s8")
COMMON = {"fold_bn": BOOL}
# finite ranges of the numeric options: a percentile of the activations, an accuracy budget
FLOAT_RANGES = {"percentile": (50.0, 100.0), "budget": (0.0, 1.0)}
FLOAT_EXAMPLES = {"percentile": "99.999", "budget": "0.01"}
STATIC = {"calibration": CALIBRATION, "per_channel": BOOL, "types": TYPES, "percentile": float}


@dataclass(frozen=True)
class Recipe:
    name: str  # canonical: base name plus sorted options
    format: str
    precision: str
    runtime: str  # what the agent needs on the device to run the artifact (fixed project-wide)
    builder: str  # "module:function" under edgekit.compress, imported only when building
    suffix: str
    uses_calibration: bool = False
    summary: str = ""
    extra: str | None = None  # the pip extra whose packages the builder imports
    options: tuple[tuple[str, object], ...] = ()  # accepted: (name, allowed values or a type)
    given: tuple[tuple[str, str], ...] = ()  # what the recipe name set, sorted
    techniques: tuple = ()  # technique steps (edgekit.compress.techniques.Step) applied before export

    @property
    def base(self) -> str:
        return f"{self.format}:{self.precision}"

    @property
    def opts(self) -> dict[str, str]:
        return dict(self.given)

    def flag(self, key: str, default: bool) -> bool:
        return self.opts.get(key, str(default).lower()) == "true"


def _r(name: str, runtime: str, builder: str, suffix: str, summary: str, options: dict | None = None,
       calibration: bool = False, extra: str | None = None) -> Recipe:
    fmt, _, precision = name.partition(":")
    return Recipe(name, fmt, precision, runtime, builder, suffix, calibration, summary, extra,
                  tuple({**COMMON, **(options or {})}.items()))


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        _r("onnx:fp32", "onnxruntime", "onnx:build_fp32", ".onnx", "torch.onnx export (dynamo), opset 18"),
        _r("onnx:fp16", "onnxruntime", "onnx:build_fp16", ".onnx",
           "fp16 weights and compute, fp32 inputs/outputs (keep_io_types)", {"keep_io_types": BOOL}),
        _r("onnx:int8-dynamic", "onnxruntime", "onnx:build_int8_dynamic", ".onnx",
           "ORT dynamic int8 (weights int8, activations at run time); for Linear-heavy nets, slow on convs",
           {"per_channel": BOOL, "types": ("u8s8", "u8s8-reduced", "u8u8")}),
        _r("onnx:int8-static", "onnxruntime", "onnx:build_int8_static", ".onnx",
           "ORT static QDQ int8 calibrated on your data; types default from the target ISA", STATIC,
           calibration=True),
        _r("onnx:int8-mixed", "onnxruntime", "mixed:build_onnx_mixed", ".onnx",
           "static int8 with the most sensitive layers kept float until the accuracy budget holds",
           {**STATIC, "budget": float}, calibration=True),
        _r("torchscript:fp32", "torch", "torchscript:build_fp32", ".pt",
           "torch.jit.trace + freeze (TorchScript is deprecated upstream)"),
        _r("torchscript:int8", "torch", "torchscript:build_int8", ".pt",
           "FX graph mode int8 (x86/fbgemm), traced and frozen (deprecated upstream)", calibration=True),
        _r("tflite:fp32", "tflite", "tflite:build_fp32", ".tflite", "litert-torch conversion", extra="tflite"),
        _r("tflite:fp16", "tflite", "tflite:build_fp16", ".tflite", "fp16 weights (ai-edge-quantizer)",
           extra="tflite"),
        _r("tflite:int8-dynamic", "tflite", "tflite:build_int8_dynamic", ".tflite",
           "dynamic-range int8: int8 weights, float activations (ai-edge-quantizer)", extra="tflite"),
        _r("tflite:int8-static", "tflite", "tflite:build_int8_static", ".tflite",
           "full static int8 calibrated on your data (ai-edge-quantizer)", calibration=True, extra="tflite"),
        _r("executorch:fp32", "executorch", "executorch:build_fp32", ".pte", "ExecuTorch .pte, XNNPACK delegate",
           extra="executorch"),
        _r("executorch:int8", "executorch", "executorch:build_int8", ".pte",
           "ExecuTorch .pte, XNNPACK int8 (PT2E static, calibrated on your data)", calibration=True,
           extra="executorch"),
    )
}


def _check_value(base: str, key: str, value: str, allowed: object) -> str:
    if allowed is float:
        try:
            number = float(value)
        except ValueError:
            raise SpecError(f"recipe {base}: option {key}={value!r} is not a number. Fix: write {key}=0.01") from None
        low, high = FLOAT_RANGES.get(key, (0.0, float("inf")))
        if not (math.isfinite(number) and low <= number <= high):
            raise SpecError(f"recipe {base}: option {key}={value!r} is outside {low:g}..{high:g}. "
                            f"Fix: write e.g. {key}={FLOAT_EXAMPLES.get(key, '0.01')}")
        return value
    value = value.lower()
    if value not in allowed:  # type: ignore[operator]
        raise SpecError(f"recipe {base}: option {key}={value!r} is not allowed. Fix: use one of "
                        f"{', '.join(allowed)}")  # type: ignore[arg-type]
    return value


def parse_recipe(text: str) -> Recipe:
    """`[STEP+]...format:precision[?key=value&...]` -> the validated recipe with a canonical name."""
    if "+" in text:  # technique steps: `STEP+STEP+FORMAT:PRECISION`; the last part is the export recipe
        from .techniques import parse_steps

        *steps, export = [part.strip() for part in text.split("+")]
        base = parse_recipe(export)
        parsed = parse_steps(steps, text)
        return replace(base, name="+".join([s.text for s in parsed] + [base.name]), techniques=parsed)
    base, _, query = text.strip().partition("?")
    recipe = RECIPES.get(base)
    if recipe is None:
        raise SpecError(f"unknown recipe {base!r}; known: {', '.join(RECIPES)}")
    if not query:
        return recipe
    allowed = dict(recipe.options)
    given: dict[str, str] = {}
    for pair in query.split("&"):
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or not key or not value.strip():
            raise SpecError(f"recipe {text!r}: {pair!r} is not key=value. Fix: write e.g. {base}?{next(iter(allowed))}=...")
        if key not in allowed:
            raise SpecError(f"recipe {base}: unknown option {key!r}. Fix: use one of {', '.join(allowed)}")
        given[key] = _check_value(base, key, value.strip(), allowed[key])
    canonical = base + "?" + "&".join(f"{k}={v}" for k, v in sorted(given.items()))
    return replace(recipe, name=canonical, given=tuple(sorted(given.items())))
