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

from .. import __version__
from ..errors import CompressError
from ..spec import Variant
from .context import BuildContext
from .parity import compare, onnx_outputs
from .registry import Recipe, parse_recipe
from .store import ArtifactStore, cache_key, file_sha256
from .techniques import artifact_report, cache_parts as technique_cache_parts, transformed_context

CONVERTERS = ("torch", "onnx", "onnxscript", "onnxruntime")


def converter_versions() -> dict[str, str]:
    versions = {"edgekit": __version__}
    for dist in CONVERTERS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def variant_key(recipe: Recipe, ctx: BuildContext) -> str:
    return cache_key({
        "model": ctx.model_digest,
        "inputs": [i.to_dict() for i in ctx.spec.inputs],
        "recipe": recipe.name,
        "calibration": ctx.calibration.digest() if recipe.uses_calibration and ctx.calibration else None,
        "evaluation": ctx.evaluation.digest() if ctx.evaluation else None,
        "converters": converter_versions(),
        **technique_cache_parts(recipe, ctx),  # issue 7: technique steps, their options, training data
    })


def build_variant(recipe_name: str, ctx: BuildContext, store: ArtifactStore) -> tuple[Variant, bool]:
    """The variant for `recipe_name` and whether it came from the cache."""
    recipe = parse_recipe(recipe_name)
    try:
        key = variant_key(recipe, ctx)
    except CompressError as exc:  # issue 7: e.g. a technique step without training data
        return Variant(id=re.sub(r"[^a-z0-9]+", "-", recipe.name.lower()).strip("-"), recipe=recipe.name, format=recipe.format, precision=recipe.precision,
                       runtime=recipe.runtime, model=ctx.spec.name, status="failed", error=str(exc)), False
    cached = store.lookup(key)
    if cached is not None:
        return cached, True

    slug = re.sub(r"[^a-z0-9]+", "-", recipe.name.lower()).strip("-")
    variant = Variant(id=f"{slug}-{key[:8]}", recipe=recipe.name, format=recipe.format,
                      precision=recipe.precision, runtime=recipe.runtime, model=ctx.spec.name,
                      file=f"model{recipe.suffix}", converters=converter_versions(),
                      inputs=[i.to_dict() for i in ctx.spec.inputs], cache_key=key,
                      created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    staging = store.staging()
    artifact = staging / variant.file
    module_name, _, fn_name = recipe.builder.partition(":")
    try:
        builder = getattr(importlib.import_module(f"{__name__}.{module_name}"), fn_name)
        # issue 7: technique steps transform a copy of the model; parity below stays against the original
        build_ctx, variant.techniques = transformed_context(recipe, ctx)
        variant.options = builder(build_ctx, artifact)
        if variant.techniques:
            variant.options["artifact"] = artifact_report(artifact)
        variant.sha256 = file_sha256(artifact)
        variant.size_bytes = artifact.stat().st_size
        if ctx.evaluation is not None and ctx.reference is not None:
            variant.metrics = compare(onnx_outputs(artifact, ctx.evaluation, ctx.spec), ctx.reference,
                                      ctx.evaluation.labels)
    except CompressError as exc:
        return _failed(variant, staging, str(exc)), False
    except Exception as exc:  # a converter bug: condense it, keep the batch going
        return _failed(variant, staging, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"), False
    return store.commit(staging, variant), False


def _failed(variant: Variant, staging: Path, message: str) -> Variant:
    import shutil

    shutil.rmtree(staging, ignore_errors=True)
    variant.status = "failed"
    variant.error = message
    return variant
