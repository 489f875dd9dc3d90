"""Technique steps in a recipe (`prune:0.5+kd+onnx:int8-static`): applied in order, each by the
function its declaration in `registry.TECHNIQUES` names.

Applying transforms a deep copy of the torch model, step by step, and returns one report per step
for `variant.json`. The grammar and every option are declared in `registry.py`.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

from ..errors import CompressError
from ..settings import TechniqueSettings
from .registry import Step


def options_key(steps: tuple[Step, ...], defaults: TechniqueSettings) -> list[dict[str, Any]]:
    """What the cache key needs: every step's effective options."""
    return [{"step": s.name, **s.resolve(defaults)} for s in steps]


# --------------------------------------------------------------------------- applying


def apply(steps: tuple[Step, ...], ctx) -> tuple[Any, list[dict[str, Any]]]:
    """A transformed deep copy of `ctx.model` and one report per step. The original is untouched."""
    if ctx.model is None:
        raise CompressError("technique steps need a torch model, not an ONNX file. "
                            "Fix: give [model] factory or a .pt module")
    from .netstats import measure

    model = copy.deepcopy(ctx.model).eval()
    reports = []
    for i, step in enumerate(steps):
        technique = step.technique
        opts = step.resolve(ctx.techniques)
        # what a step may need to know of its place: a step right before one that retrains every
        # weight need not fine-tune; kd trains the given model rather than a copy of the original
        place = {"fine_tune": not (i + 1 < len(steps) and steps[i + 1].technique.retrains),
                 "student_given": i > 0}
        module_name, _, function = technique.apply.partition(":")
        run = getattr(importlib.import_module(f"{__package__}.{module_name}"), function)
        before = measure(model, ctx.spec)
        model, report = run(model, opts, ctx, **{key: place[key] for key in technique.place})
        after = measure(model, ctx.spec)
        reports.append({"step": step.text, "technique": step.name, "options": opts,
                        "before": before, "after": after, **report})
    return model.eval(), reports


# --------------------------------------------------------------------------- hooks for build_variant


def cache_parts(recipe, ctx) -> dict[str, Any]:
    """Extra cache-key parts for a recipe with technique steps; {} without, so plain keys are unchanged."""
    if not recipe.techniques:
        return {}
    from .training import training_data

    training = training_data(ctx).digest() if ctx.spec.training else None
    return {"techniques": options_key(recipe.techniques, ctx.techniques), "training": training}


def transformed_context(recipe, ctx):
    """(context whose model went through the recipe's steps, the step reports); ctx itself if none."""
    if not recipe.techniques:
        return ctx, []
    from dataclasses import replace

    model, reports = apply(recipe.techniques, ctx)
    return replace(ctx, model=model), reports


def artifact_report(path) -> dict[str, Any]:
    """The exported file's gzip size: what weight sharing and sparsity shrink."""
    import gzip
    from pathlib import Path

    data = Path(path).read_bytes()
    return {"artifact_bytes": len(data), "artifact_gzip_bytes": len(gzip.compress(data, compresslevel=6))}
