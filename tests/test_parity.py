"""Parity figures on constructed outputs, each checked against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.compress.parity import classifier_output, compare
from edgekit.errors import ModelError
from edgekit.pipeline import judge_device
from edgekit.select import fidelity_violations
from edgekit.records import Variant

RNG = np.random.default_rng(0)


def test_every_output_is_compared_and_the_worst_is_reported():
    boxes = RNG.standard_normal((20, 1, 8, 4)).astype(np.float32)
    scores = RNG.random((20, 1, 8, 2)).astype(np.float32)
    noisy = scores + RNG.normal(0, 0.2, scores.shape).astype(np.float32)
    m = compare([boxes, noisy], [boxes, scores], None)
    assert [o["shape"] for o in m["outputs"]] == [[1, 8, 4], [1, 8, 2]]
    assert m["outputs"][0]["max_abs_diff"] == 0 and m["outputs"][0]["mean_cosine"] == pytest.approx(1.0)
    expected = np.mean([a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b)
                        for a, b in zip(noisy.astype(np.float64), scores.astype(np.float64))])
    assert m["outputs"][1]["mean_cosine"] == pytest.approx(expected, abs=1e-9)
    assert m["mean_cosine"] == pytest.approx(expected, abs=1e-9)  # the worst output
    assert m["max_abs_diff"] == pytest.approx(np.abs(noisy - scores).max(), rel=1e-6)
    assert "top1_agreement" not in m and "accuracy_drop" not in m  # no classifier: no argmax over boxes


def test_top1_only_on_a_classifier_output():
    ref = RNG.standard_normal((50, 1, 10)).astype(np.float32)
    out = ref.copy()
    out[:5, 0, :] = out[:5, 0, ::-1]  # flip the class order on 5 samples
    labels = ref.reshape(50, 10).argmax(1)
    m = compare([out], [ref], labels)
    agree = (out.reshape(50, 10).argmax(1) == labels).mean()
    assert m["top1_agreement"] == pytest.approx(agree) and m["accuracy"] == pytest.approx(agree)
    assert m["accuracy_drop"] == pytest.approx(1 - agree) and m["accuracy_drop_basis"] == "labels"
    # an embedding [1, 64] with no labels and no task: no top-1
    emb = RNG.standard_normal((10, 1, 64))
    assert "top1_agreement" not in compare([emb], [emb], None)
    # task = classification without labels: top-1 agreement is the basis
    t = compare([out], [ref], None, task="classification")
    assert t["accuracy_drop_basis"] == "top-1 agreement with the original"
    # labels that cannot index the output's classes: not a classifier of those labels
    assert classifier_output([ref], np.full(50, 12), None) is None


def test_nonfinite_outputs_never_pass():
    ref = RNG.standard_normal((4, 1, 1)).astype(np.float32)
    out = ref.copy()
    out[2, 0, 0] = np.nan
    m = compare([out], [ref], None)
    assert m["nonfinite"] == 1 and m["mean_cosine"] == 0.0
    v = Variant(id="v", recipe="r", format="onnx", precision="fp32", runtime="onnxruntime", model="m", metrics=m)
    assert any("NaN" in p for p in fidelity_violations(v, {"max_abs_diff": 1.0}))
    host = compare([ref], [ref], None)
    verdict = judge_device(host, m)
    assert not verdict["passed"] and "NaN" in verdict["problems"][0]


def test_one_value_outputs_compare_across_samples():
    ref = np.array([0.1, 0.9, 0.2, 0.8]).reshape(4, 1, 1)
    swapped = np.array([0.9, 0.1, 0.8, 0.2]).reshape(4, 1, 1)
    m = compare([swapped], [ref], None)
    a, b = swapped.ravel(), ref.ravel()
    assert m["mean_cosine"] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert m["mean_cosine"] < 0.5  # a per-sample cosine of one positive number would say 1.0


def test_user_metric_and_its_errors():
    ref = [RNG.standard_normal((6, 1, 3))]

    def agreement(reference, outputs, labels):
        return float((reference[0].argmax(-1) == outputs[0].argmax(-1)).mean())

    m = compare(ref, ref, None, metric=agreement)
    assert m["metric"] == m["reference_metric"] == 1.0 and m["metric_drop"] == 0.0
    with pytest.raises(ModelError, match="returned nan"):
        compare(ref, ref, None, metric=lambda r, o, l: float("nan"))
    with pytest.raises(ModelError, match="raised ZeroDivisionError"):
        compare(ref, ref, None, metric=lambda r, o, l: 1 / 0)
    with pytest.raises(ModelError, match="2 outputs, the original model 1"):
        compare(ref * 2, ref, None)


def test_fidelity_constraints_name_constraint_and_figure():
    metrics = {"mean_cosine": 0.956, "max_abs_diff": 0.3, "outputs": [{"name": "emb", "mean_cosine": 0.956}],
               "nonfinite": 0}
    v = Variant(id="v", recipe="r", format="onnx", precision="int8", runtime="onnxruntime", model="m",
                metrics=metrics)
    # max_accuracy_drop on an embedder: judged by cosine, and says so
    (reason,) = fidelity_violations(v, {"max_accuracy_drop": 0.01})
    assert "cosine 0.9560 < 0.99" in reason and "max_accuracy_drop needs class scores" in reason
    assert fidelity_violations(v, {"min_cosine": 0.95}) == []
    assert fidelity_violations(v, {"min_cosine": 0.96}) == ["cosine 0.9560 < 0.96 (min_cosine)"]
    assert "(max_abs_diff)" in fidelity_violations(v, {"max_abs_diff": 0.1})[0]
    assert "needs a user metric" in fidelity_violations(v, {"max_metric_drop": 0.01})[0]
    assert "no classifier output" in fidelity_violations(v, {"min_top1_agreement": 0.9})[0]
    v.metrics = {}
    assert "add [data] evaluation" in fidelity_violations(v, {"min_cosine": 0.9})[0]
