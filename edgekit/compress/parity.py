"""How close an artifact stays to the original model, on the user's evaluation data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..model import Dataset
from ..spec import ModelSpec
from .runtimes import outputs


def onnx_outputs(path: Path, data: Dataset, spec: ModelSpec) -> list[np.ndarray]:
    """Every output of an ONNX model on the evaluation batches, run with ONNX Runtime on the host
    ([calls, *per-call shape] each, as `runtimes.outputs` returns them)."""
    return outputs("onnx", path, data, spec)


def compare(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """Max abs diff, mean cosine similarity, top-1 agreement and accuracy against labels.

    `accuracy_drop` is what selection budgets: reference accuracy minus this accuracy when the
    data has labels, otherwise the share of samples whose top-1 class changed.
    """
    out = outputs.reshape(len(outputs), -1).astype(np.float64)
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    norms = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
    cosine = np.where(norms > 0, (out * ref).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)
    metrics: dict[str, Any] = {
        "samples": int(len(out)),
        "max_abs_diff": float(np.abs(out - ref).max()),
        "mean_abs_diff": float(np.abs(out - ref).mean()),
        "mean_cosine": float(cosine.mean()),
    }
    if out.shape[1] > 1:
        top1, ref_top1 = out.argmax(axis=1), ref.argmax(axis=1)
        metrics["top1_agreement"] = float((top1 == ref_top1).mean())
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)[: len(out)]
            metrics["accuracy"] = float((top1 == labels).mean())
            metrics["reference_accuracy"] = float((ref_top1 == labels).mean())
            metrics["accuracy_drop"] = metrics["reference_accuracy"] - metrics["accuracy"]
            metrics["accuracy_drop_basis"] = "labels"
        else:
            metrics["accuracy_drop"] = 1.0 - metrics["top1_agreement"]
            metrics["accuracy_drop_basis"] = "top-1 agreement with the original"
    return metrics
