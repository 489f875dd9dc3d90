"""How close an artifact stays to the original model, on the user's evaluation data.

Every output is compared, because real models have several (boxes and scores, a probability and
a recurrent state) and any of them can be the one a build breaks. Which figure *means* something
depends on the output: top-1 agreement and label accuracy only for a classifier output (labels
given, or `task = "classification"`), cosine and absolute differences for every output, and the
user's own metric when the spec names one. A non-finite value where the original is finite is a
failure, whatever the other figures say: every comparison with NaN is false, so a NaN would
otherwise pass every "diff <= limit" test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ModelError
from ..model import Dataset, Outputs
from ..settings import ModelSpec


def onnx_outputs(path: Path, data: Dataset, spec: ModelSpec) -> Outputs:
    """Every output of an ONNX file on every evaluation call, run with ONNX Runtime on the host."""
    from .runtimes import outputs

    return outputs("onnx", path, data, spec)


def _as_outputs(value: Any) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    return [np.asarray(v) for v in value]


def _cosine(out: np.ndarray, ref: np.ndarray) -> float:
    """Mean over calls of the cosine between a call's output and the original's; an output of one
    value per call is compared as one vector across the calls (a per-call cosine of one number
    only says whether the signs agree)."""
    calls = len(out)
    o = out.reshape(calls, -1)
    r = ref.reshape(calls, -1)
    if o.shape[1] == 1:
        o, r = o.reshape(1, -1), r.reshape(1, -1)
    norms = np.linalg.norm(o, axis=1) * np.linalg.norm(r, axis=1)
    same = np.all(o == r, axis=1)
    cos = np.where(norms > 0, (o * r).sum(axis=1) / np.maximum(norms, 1e-300), np.where(same, 1.0, 0.0))
    return float(np.clip(cos, -1.0, 1.0).mean())


def classifier_output(reference: list[np.ndarray], labels: np.ndarray | None, task: str | None) -> int | None:
    """Which output holds class scores: the first one for `task = "classification"`; with labels,
    the first [batch, classes > 1] output the labels index into; otherwise none."""
    if task == "classification":
        return 0
    if labels is None:
        return None
    lab = np.asarray(labels).reshape(-1)
    if lab.dtype.kind not in "iub" or not len(lab):
        return None
    for j, ref in enumerate(reference):
        per_call = ref.shape[1:]
        if len(per_call) == 2 and per_call[1] > 1 and lab.min() >= 0 and lab.max() < per_call[1]:
            return j
        if len(per_call) == 1 and per_call[0] > 1 and lab.min() >= 0 and lab.max() < per_call[0]:
            return j
    return None


def compare(outputs: Sequence[np.ndarray] | np.ndarray, reference: Sequence[np.ndarray] | np.ndarray,
            labels: np.ndarray | None, task: str | None = None,
            metric: Callable[..., float] | None = None, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-output and overall figures of `outputs` against the original's (both: one array per
    output, stacked over calls).

    Overall `max_abs_diff` and `mean_abs_diff` are the worst output's; `mean_cosine` is the worst
    output's mean cosine. `accuracy_drop` (what `max_accuracy_drop` budgets) exists only for a
    classifier output: reference accuracy minus this accuracy with labels, else the share of
    samples whose top-1 class changed (for `task = "classification"` without labels).
    """
    outs, refs = _as_outputs(outputs), _as_outputs(reference)
    if len(outs) != len(refs):
        raise ModelError(f"the artifact has {len(outs)} outputs, the original model {len(refs)}. "
                         f"Fix: export every output of the model")
    per_output: list[dict[str, Any]] = []
    nonfinite = 0
    for j, (out, ref) in enumerate(zip(outs, refs)):
        name = names[j] if names and j < len(names) else f"output_{j}"
        if out.shape != ref.shape and out.size == ref.size:
            out = out.reshape(ref.shape)  # e.g. a converter that squeezes a unit dimension
        if out.shape != ref.shape:
            raise ModelError(f"output {name}: the artifact gives shape {list(out.shape[1:])} per call, the original "
                             f"{list(ref.shape[1:])}")
        o = out.astype(np.float64)
        r = ref.astype(np.float64)
        ref_ok = np.isfinite(r)
        bad = int((~np.isfinite(o) & ref_ok).sum())
        nonfinite += bad
        ok = np.isfinite(o) & ref_ok
        diff = np.abs(o - r)[ok]
        item: dict[str, Any] = {
            "name": name, "shape": list(ref.shape[1:]),
            "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
            "mean_cosine": _cosine(np.where(ok, o, 0.0), np.where(ok, r, 0.0)) if not bad else 0.0,
            "reference_max_abs": float(np.abs(r[ref_ok]).max()) if ref_ok.any() else 0.0,
        }
        if bad:
            item["nonfinite"] = bad
        per_output.append(item)
    metrics: dict[str, Any] = {
        "samples": int(len(refs[0])) if refs else 0,
        "outputs": per_output,
        "max_abs_diff": max(o["max_abs_diff"] for o in per_output),
        "mean_abs_diff": max(o["mean_abs_diff"] for o in per_output),
        "mean_cosine": min(o["mean_cosine"] for o in per_output),
        "nonfinite": nonfinite,
    }
    cls = classifier_output(refs, labels, task)
    if cls is not None:
        classes = refs[cls].shape[-1]
        top1 = outs[cls].reshape(-1, classes).argmax(axis=1)
        ref_top1 = refs[cls].reshape(-1, classes).argmax(axis=1)
        metrics["samples"] = int(len(top1))
        metrics["classifier_output"] = per_output[cls]["name"]
        metrics["top1_agreement"] = float((top1 == ref_top1).mean())
        if labels is not None:
            lab = np.asarray(labels).reshape(-1)[: len(top1)]
            metrics["accuracy"] = float((top1 == lab).mean())
            metrics["reference_accuracy"] = float((ref_top1 == lab).mean())
            metrics["accuracy_drop"] = metrics["reference_accuracy"] - metrics["accuracy"]
            metrics["accuracy_drop_basis"] = "labels"
        else:
            metrics["accuracy_drop"] = 1.0 - metrics["top1_agreement"]
            metrics["accuracy_drop_basis"] = "top-1 agreement with the original"
    if metric is not None:
        metrics.update(user_metric(metric, refs, outs, labels))
    return metrics


def user_metric(metric: Callable[..., float], reference: list[np.ndarray], outputs: list[np.ndarray],
                labels: np.ndarray | None) -> dict[str, Any]:
    """The spec's `[data] metric` (higher is better) on the original's and the artifact's outputs."""
    name = getattr(metric, "__qualname__", "metric")
    values = []
    for outs in (reference, outputs):
        try:
            value = metric(reference, outs, labels)
            value = float(value)
        except Exception as exc:
            raise ModelError(f"[data] metric {name} raised {type(exc).__name__}: {' '.join(str(exc).split())[:200]}. "
                             f"Fix: make it take (reference, outputs, labels) and return a float") from None
        if not np.isfinite(value):
            raise ModelError(f"[data] metric {name} returned {value}. Fix: return a finite float, higher is better")
        values.append(value)
    return {"metric_name": name, "reference_metric": values[0], "metric": values[1],
            "metric_drop": values[0] - values[1]}


def fidelity_loss(metrics: dict[str, Any]) -> float:
    """One "how much was lost" figure to budget against, whatever the outputs are: the label
    accuracy drop for a classifier, else the user metric's drop, else 1 - worst-output cosine."""
    for key in ("accuracy_drop", "metric_drop"):
        if metrics.get(key) is not None:
            return float(metrics[key])
    return 1.0 - float(metrics.get("mean_cosine", 1.0))
