"""Build one variant from a recipe: convert, hash, measure parity, cache.

A converter failure is recorded on the variant (status "failed", one-line reason) rather than
raised, so one unsupported recipe never sinks the batch.
"""

from __future__ import annotations

import importlib
import re
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CompressError, one_line
from ..records import Variant
from .context import BuildContext
from .isa import int8_types
from .registry import Recipe, parse_recipe
from .runtimes import node_count, outputs
from .store import ArtifactStore, cache_key, file_sha256
from .techniques import artifact_report, cache_parts as technique_cache_parts, transformed_context

CONVERTERS = {
    "onnx": ("torch", "onnx", "onnxscript", "onnxruntime", "onnxconverter-common"),
    "torchscript": ("torch",),
    "tflite": ("torch", "litert-torch", "ai-edge-quantizer", "ai-edge-litert"),
    "executorch": ("torch", "executorch", "torchao"),
}


def converter_versions(fmt: str = "onnx") -> dict[str, str]:
    versions = {"edgekit": __version__}
    for dist in CONVERTERS.get(fmt, ()):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def context_defaults(recipe: Recipe, ctx: BuildContext) -> dict[str, Any]:
    """Settings a recipe takes from the context when its name does not fix them (they key the cache)."""
    names = {o.name for o in recipe.options}
    out: dict[str, Any] = {}
    if "types" in names and "types" not in recipe.opts and recipe.format == "onnx" and recipe.uses_calibration:
        out["types"] = int8_types(ctx.isa)[0]
    if "budget" in names and "budget" not in recipe.opts:
        out["budget"] = ctx.max_accuracy_drop
    return out


# Bump when builders change what they write or check without a converter version changing (2: ONNX
# pre-processing for third-party graphs, quantized-op counts, int8 that quantized nothing fails), so
# an entry built by the old rules is rebuilt instead of served.
BUILD_RULES = 2


def variant_key(recipe: Recipe, ctx: BuildContext) -> str:
    return cache_key({
        "rules": BUILD_RULES,
        "model": ctx.model_digest,
        "inputs": [i.to_dict() for i in ctx.spec.inputs],
        "dynamic_batch": getattr(ctx.spec, "dynamic_batch", False),
        "recipe": recipe.name,
        "defaults": context_defaults(recipe, ctx),
        "calibration": ctx.calibration.digest() if recipe.uses_calibration and ctx.calibration else None,
        "evaluation": ctx.evaluation.digest() if ctx.evaluation else None,
        "converters": converter_versions(recipe.format),
        **technique_cache_parts(recipe, ctx),  # technique steps, their options, training data
    })


def _unavailable(recipe: Recipe, ctx: BuildContext) -> str | None:
    """Why this recipe cannot be built from this input, before any work is done."""
    if ctx.model is None and recipe.format != "onnx":
        return (f"the model is an ONNX file, so only onnx:* recipes apply ({recipe.base} converts from a "
                f"torch model). Fix: give the torch model (factory or .pt) or drop {recipe.base}")
    return None


def budget_check(variant: Variant, budget: float | None) -> None:
    """Flag a variant whose accuracy drop exceeds the profile's budget (selection will reject it)."""
    variant.warnings = [w for w in variant.warnings if "exceeds the budget" not in w]
    for key in ("accuracy_budget", "within_budget"):
        variant.metrics.pop(key, None)
    drop = variant.metrics.get("accuracy_drop")
    if budget is None or drop is None:
        return
    variant.metrics["accuracy_budget"] = budget
    variant.metrics["within_budget"] = bool(drop <= budget + 1e-12)
    if not variant.metrics["within_budget"]:
        note = (f"accuracy drop {drop * 100:.2f} pts exceeds the budget of {budget * 100:.2f} pts; "
                f"try onnx:int8-mixed (keeps the most sensitive layers float)")
        if note not in variant.warnings:
            variant.warnings.append(note)


def build_variant(recipe_name: str, ctx: BuildContext, store: ArtifactStore) -> tuple[Variant, bool]:
    """The variant for `recipe_name` and whether it came from the cache."""
    recipe = parse_recipe(recipe_name)
    try:
        key = variant_key(recipe, ctx)
    except CompressError as exc:  # e.g. a technique step without training data
        return Variant(id=re.sub(r"[^a-z0-9]+", "-", recipe.name.lower()).strip("-"), recipe=recipe.name, format=recipe.format, precision=recipe.precision,
                       runtime=recipe.runtime, model=ctx.spec.name, status="failed", error=str(exc)), False
    cached = store.lookup(key)
    if cached is not None:
        budget_check(cached, ctx.max_accuracy_drop)
        return cached, True

    slug = re.sub(r"[^a-z0-9]+", "-", recipe.name.lower()).strip("-")
    variant = Variant(id=f"{slug}-{key[:8]}", recipe=recipe.name, format=recipe.format,
                      precision=recipe.precision, runtime=recipe.runtime, model=ctx.spec.name,
                      file=f"model{recipe.suffix}", converters=converter_versions(recipe.format),
                      inputs=[i.to_dict() for i in ctx.spec.inputs], cache_key=key,
                      created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    reason = _unavailable(recipe, ctx)
    if reason:
        variant.status, variant.error = "failed", reason
        return variant, False
    module_name, _, fn_name = recipe.builder.partition(":")
    try:
        module = importlib.import_module(f"{__package__}.{module_name}")
    except ImportError as exc:
        hint = f"pip install 'edgekit[{recipe.extra}]'" if recipe.extra else "reinstall edgekit"
        variant.status, variant.error = "failed", f"{recipe.base} needs {exc.name or 'a converter'}: {hint}"
        return variant, False
    staging = store.staging()
    artifact = staging / variant.file
    try:
        # technique steps transform a copy of the model; parity below stays against the original
        build_ctx, variant.techniques = transformed_context(recipe, ctx)
        options = getattr(module, fn_name)(build_ctx, recipe, artifact)
        variant.warnings = list(options.pop("warnings", []))
        variant.options = options
        if variant.techniques:
            variant.options["artifact"] = artifact_report(artifact)
        variant.sha256 = file_sha256(artifact)
        variant.size_bytes = artifact.stat().st_size
        merging = options.get("layer_merging")
        if isinstance(merging, dict):
            merging["artifact_nodes"] = node_count(recipe.format, artifact)
        if ctx.evaluation is not None and ctx.reference is not None:
            variant.metrics = ctx.compare(outputs(recipe.format, artifact, ctx.evaluation, ctx.spec))
            variant.metrics["parity_runtime"] = recipe.runtime
    except ImportError as exc:
        hint = f"pip install 'edgekit[{recipe.extra}]'" if recipe.extra else "reinstall edgekit"
        return _failed(variant, staging, f"{recipe.base} needs {exc.name or 'a converter'}: {hint}"), False
    except CompressError as exc:
        return _failed(variant, staging, str(exc)), False
    except Exception as exc:  # a converter bug: condense it, keep the batch going
        return _failed(variant, staging, one_line(exc, with_type=True)), False
    budget_check(variant, ctx.max_accuracy_drop)
    return store.commit(staging, variant), False


def _failed(variant: Variant, staging: Path, message: str) -> Variant:
    import shutil

    shutil.rmtree(staging, ignore_errors=True)
    variant.status = "failed"
    variant.error = message
    return variant
