"""Technique steps in a recipe (`prune:0.5+kd+onnx:int8-static`): parse, validate, apply in order.

Parsing is light (no torch), because profiles are validated before anything heavy loads. Applying
transforms a deep copy of the torch model, step by step, and returns one report per step for
`variant.json`. The grammar is documented in `registry.py`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import CompressError, SpecError
from ..settings import AUGMENTS, IMPORTANCES, SCHEDULES, TechniqueSettings


def _ratio(v: str) -> float:
    x = float(v)
    if not 0.0 < x < 1.0:
        raise ValueError("must be between 0 and 1 (exclusive)")
    return x


def _positive_int(v: str) -> int:
    x = int(v)
    if x < 1:
        raise ValueError("must be >= 1")
    return x


def _count(v: str) -> int:
    x = int(v)
    if x < 0:
        raise ValueError("must be >= 0")
    return x


def _clusters(v: str) -> int:
    x = int(v)
    if not 2 <= x <= 65536:
        raise ValueError("must be 2..65536")
    return x


def _positive(v: str) -> float:
    x = float(v)
    if not x > 0:
        raise ValueError("must be > 0")
    return x


def _unit(v: str) -> float:
    x = float(v)
    if not 0.0 <= x <= 1.0:
        raise ValueError("must be 0..1")
    return x


def _importance(v: str) -> str:
    if v not in IMPORTANCES:
        raise ValueError(f"must be one of {', '.join(IMPORTANCES)}")
    return v


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(v: str) -> str:
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v
    return parse


MERGE_CRITERIA = ("cosine", "l2")  # neuron_merge.CRITERIA, kept here so parsing needs no torch
_TRAIN = {"epochs": _count, "lr": _positive, "augment": _choice(AUGMENTS), "schedule": _choice(SCHEDULES)}
# technique -> (name of the positional value, {option: parser})
TECHNIQUES: dict[str, tuple[str | None, dict[str, Callable[[str], Any]]]] = {
    "prune": ("ratio", {"ratio": _ratio, "importance": _importance, "iterations": _positive_int, **_TRAIN}),
    "merge": ("ratio", {"ratio": _ratio, "criterion": _choice(MERGE_CRITERIA), **_TRAIN}),
    "sparsity": ("ratio", {"ratio": _ratio, **_TRAIN}),
    "cluster": ("clusters", {"clusters": _clusters, **_TRAIN}),
    "kd": (None, {"temperature": _positive, "alpha": _unit, **_TRAIN}),
}
ALIASES = {f"prune-{imp}": ("prune", {"importance": imp}) for imp in IMPORTANCES}
REQUIRED = {"prune": "ratio", "merge": "ratio", "sparsity": "ratio", "cluster": "clusters"}
SUMMARIES = {  # for `edgekit recipes`
    "prune:0.5[,importance=l1|l2|taylor,iterations=N,epochs=N,lr=X]":
        "structured channel pruning (torch-pruning), then fine-tuning on [data] training",
    "merge:0.3[,criterion=cosine|l2,epochs=N,lr=X]":
        "neuron merging: removes channels like prune but folds each into its most similar kept one, so no data "
        "or training is needed (epochs default 0); falls back to pruning where it cannot be exact or bounded",
    "sparsity:0.8[,epochs=N,lr=X]": "unstructured magnitude pruning: smaller gzip file, same latency on dense runtimes",
    "cluster:16[,epochs=N,lr=X]": "weight sharing: k-means per layer to N values, centroid fine-tuning",
    "kd[:temperature=4,alpha=0.9,epochs=N,lr=X,augment=none|shift|affine,schedule=constant|cosine]":
        "distillation from the original into the pruned student (the teacher labels augmented images); "
        "also reports the no-teacher baseline trained the same way",
}
# kd retrains every weight: after sparsity or cluster it would undo them
MUST_PRECEDE = {"kd": ("sparsity", "cluster")}


@dataclass(frozen=True)
class Step:
    name: str  # prune | merge | sparsity | cluster | kd
    options: tuple[tuple[str, Any], ...]  # the inline options, sorted by key
    text: str  # canonical spelling, part of the recipe name and so of the cache key

    def resolve(self, defaults: TechniqueSettings) -> dict[str, Any]:
        """Effective options: the profile's `[techniques]` defaults under the inline ones."""
        _, allowed = TECHNIQUES[self.name]
        base = {k: v for k, v in defaults.to_dict().items() if k in allowed or k in ("batch_size", "seed")}
        if self.name in ("prune", "merge"):
            base["ignore"] = list(defaults.ignore)
        if self.name == "merge":  # its point is accuracy without data: fine-tune only when asked inline
            base.update({"epochs": 0, "criterion": "cosine"})
        if self.name == "kd":
            base["student"] = defaults.student
        return {**base, **dict(self.options)}


def parse_step(text: str, recipe: str) -> Step:
    """`prune:0.5`, `prune-taylor:0.3,iterations=3`, `cluster:16,epochs=0`, `kd:temperature=2`."""
    head, _, rest = text.strip().partition(":")
    name = head.strip().lower()
    options: dict[str, Any] = {}
    if name in ALIASES:
        name, options = ALIASES[name][0], dict(ALIASES[name][1])
    if name not in TECHNIQUES:
        known = ", ".join([*TECHNIQUES, *ALIASES])
        raise SpecError(f"recipe {recipe!r}: unknown technique {head!r}. Fix: use one of {known}, "
                        f"then an export such as onnx:int8-static")
    positional, parsers = TECHNIQUES[name]
    for i, item in enumerate(p.strip() for p in rest.split(",") if p.strip()) if rest else ():
        key, eq, value = item.partition("=")
        if not eq:
            if i > 0 or positional is None:
                raise SpecError(f"recipe {recipe!r}: {text!r}: {item!r} must be KEY=VALUE. "
                                f"Fix: write e.g. {name}:{'0.5,' if positional else ''}epochs=2")
            key, value = positional, item
        key = key.strip()
        if key not in parsers:
            raise SpecError(f"recipe {recipe!r}: {name} has no option {key!r}. Fix: use one of {', '.join(parsers)}")
        try:
            options[key] = parsers[key](value.strip())
        except ValueError as exc:
            raise SpecError(f"recipe {recipe!r}: {name} {key}={value!r}: {exc}. "
                            f"Fix: e.g. prune:0.5, sparsity:0.8, cluster:16, kd:temperature=4") from None
    if name in REQUIRED and REQUIRED[name] not in options:
        raise SpecError(f"recipe {recipe!r}: {name} needs its {REQUIRED[name]}. Fix: write e.g. "
                        f"{'cluster:16' if name == 'cluster' else name + ':0.5'}")
    ordered = tuple(sorted(options.items()))
    lead = options.get(positional) if positional else None
    rest_text = ",".join(f"{k}={v}" for k, v in ordered if k != positional)
    canonical = name + (f":{lead}" if lead is not None else "") + (
        ("," if lead is not None else ":") + rest_text if rest_text else "")
    return Step(name, ordered, canonical)


def parse_steps(parts: list[str], recipe: str) -> tuple[Step, ...]:
    steps = tuple(parse_step(p, recipe) for p in parts)
    if not steps:
        raise SpecError(f"recipe {recipe!r}: empty technique list. Fix: write e.g. prune:0.5+onnx:fp32")
    for i, step in enumerate(steps):
        for later in steps[i + 1:]:
            if later.name in MUST_PRECEDE and step.name in MUST_PRECEDE[later.name]:
                raise SpecError(f"recipe {recipe!r}: {later.name} after {step.name} would retrain the weights "
                                f"{step.name} set. Fix: put {later.name} before {step.name}")
    if sum(s.name == "kd" for s in steps) > 1:
        raise SpecError(f"recipe {recipe!r}: kd appears twice. Fix: distil once")
    return steps


def options_key(steps: tuple[Step, ...], defaults: TechniqueSettings) -> list[dict[str, Any]]:
    """What the cache key needs: every step's effective options."""
    return [{"step": s.name, **s.resolve(defaults)} for s in steps]


# --------------------------------------------------------------------------- applying


def apply(steps: tuple[Step, ...], ctx) -> tuple[Any, list[dict[str, Any]]]:
    """A transformed deep copy of `ctx.model` and one report per step. The original is untouched."""
    if ctx.model is None:
        raise CompressError("technique steps need a torch model, not an ONNX file. "
                            "Fix: give [model] factory or a .pt module")
    from . import cluster, distill, neuron_merge, prune, sparsity
    from .netstats import measure

    model = copy.deepcopy(ctx.model).eval()
    reports = []
    for i, step in enumerate(steps):
        opts = step.resolve(ctx.techniques)
        next_is_kd = i + 1 < len(steps) and steps[i + 1].name == "kd"
        before = measure(model, ctx.spec)
        if step.name == "prune":
            model, report = prune.apply(model, opts, ctx, fine_tune=not next_is_kd)
        elif step.name == "merge":
            model, report = neuron_merge.apply(model, opts, ctx, fine_tune=not next_is_kd)
        elif step.name == "sparsity":
            model, report = sparsity.apply(model, opts, ctx)
        elif step.name == "cluster":
            model, report = cluster.apply(model, opts, ctx)
        else:
            model, report = distill.apply(model, opts, ctx, student_given=i > 0)
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
