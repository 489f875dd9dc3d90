"""Technique steps on the real digits model and data: each test checks a real effect."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekit.compress import build_variant, techniques
from edgekit.compress.registry import parse_recipe
from edgekit.compress.store import ArtifactStore
from edgekit.compress.training import accuracy, fit
from edgekit.errors import SpecError
from edgekit.spec import TechniqueSettings, load_profile

FAST = TechniqueSettings(epochs=2, lr=2e-3)


@pytest.fixture
def ctx(built):
    """The session's digits context, with its own technique defaults (never shared state)."""
    base, _ = built
    return dataclasses.replace(base, techniques=FAST)


def _steps(text: str):
    return parse_recipe(text + "+onnx:fp32").techniques


def _conv_out_channels(model) -> list[int]:
    from torch import nn

    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


# --------------------------------------------------------------------------- grammar


def test_recipe_grammar_splits_validates_and_canonicalises():
    r = parse_recipe("prune-taylor:0.3, iterations=2+ kd:alpha=0.5 +onnx:int8-static")
    assert (r.format, r.precision, r.uses_calibration) == ("onnx", "int8-static", True)
    assert [s.name for s in r.techniques] == ["prune", "kd"]
    assert dict(r.techniques[0].options) == {"ratio": 0.3, "importance": "taylor", "iterations": 2}
    assert r.name == "prune:0.3,importance=taylor,iterations=2+kd:alpha=0.5+onnx:int8-static"
    assert parse_recipe(r.name) == r
    assert parse_recipe("onnx:fp32").techniques == ()
    for bad, words in (("prune:1.5+onnx:fp32", "between 0 and 1"), ("prune+onnx:fp32", "needs its ratio"),
                       ("shrink:0.5+onnx:fp32", "unknown technique"), ("cluster:16+kd+onnx:fp32", "put kd before"),
                       ("prune:0.5,speed=3+onnx:fp32", "no option 'speed'"), ("prune:0.5+onnx:fp64", "unknown recipe"),
                       ("kd:0.5+onnx:fp32", "KEY=VALUE")):
        with pytest.raises(SpecError, match=words):
            parse_recipe(bad)


def test_profile_techniques_table_is_validated(tmp_path):
    good = tmp_path / "p.toml"
    good.write_text('[build]\nrecipes = ["prune:0.5+kd+onnx:fp32"]\n'
                    '[techniques]\nepochs = 3\nlr = 0.01\nimportance = "taylor"\nignore = ["0"]\n')
    prof = load_profile(str(good))
    assert prof.techniques == TechniqueSettings(epochs=3, lr=0.01, importance="taylor", ignore=("0",))
    bad = tmp_path / "bad.toml"
    bad.write_text('[build]\nrecipes = ["onnx:fp32"]\n[techniques]\nimportance = "random"\n')
    with pytest.raises(SpecError, match=r"\[techniques\] importance: 'random' is not known"):
        load_profile(str(bad))


def test_latency_profile_loads():
    prof = load_profile("latency")
    assert any(parse_recipe(r).techniques for r in prof.recipes)
    assert any("kd" in r for r in prof.recipes) and any("kd" not in r and "prune" in r for r in prof.recipes)


# --------------------------------------------------------------------------- structured pruning


def test_pruning_removes_channels_and_fine_tuning_recovers_accuracy(ctx):
    original = accuracy(ctx.model, ctx)
    raw, raw_reports = techniques.apply(_steps("prune:0.6,epochs=0"), ctx)
    tuned, reports = techniques.apply(_steps("prune:0.6,epochs=3"), ctx)
    before, after = _conv_out_channels(ctx.model), _conv_out_channels(tuned)
    assert all(a < b for a, b in zip(after, before)), (before, after)
    assert _conv_out_channels(ctx.model) == [16, 32], "the original model is left untouched"
    report = reports[0]
    assert report["after"]["params"] < report["before"]["params"] / 2
    assert report["after"]["macs"] < report["before"]["macs"] / 2
    assert report["channels_after"][report["head"]] == 10, "the classifier head keeps its outputs"
    acc_raw, acc_tuned = accuracy(raw, ctx), accuracy(tuned, ctx)
    assert acc_tuned > acc_raw + 0.02, (acc_raw, acc_tuned)
    assert acc_tuned > original - 0.04, (original, acc_tuned)


def test_taylor_importance_iterative_and_ignored_layers(ctx):
    ctx = dataclasses.replace(ctx, techniques=dataclasses.replace(FAST, ignore=("0",)))
    model, (report,) = techniques.apply(_steps("prune-taylor:0.5,iterations=2,epochs=2"), ctx)
    assert report["schedule"] == "iterative, 2 rounds" and len(report["fine_tuning"]) == 2
    assert report["channels_after"]["0"] == 16, "an ignored layer keeps its channels"
    assert report["channels_after"]["3"] < 32
    with pytest.raises(Exception, match="ignore names 'nope'"):
        techniques.apply(_steps("prune:0.5"), dataclasses.replace(
            ctx, techniques=dataclasses.replace(FAST, ignore=("nope",))))


# --------------------------------------------------------------------------- unstructured sparsity


def test_sparsity_zeroes_weights_and_says_latency_does_not_improve(ctx):
    model, (report,) = techniques.apply(_steps("sparsity:0.8,epochs=1"), ctx)
    for name, share in report["layer_sparsity"].items():
        assert share >= 0.79, (name, share)
    assert report["after"]["sparsity"] >= 0.79 and report["after"]["macs"] == report["before"]["macs"]
    assert report["after"]["weights_gzip_bytes"] < report["before"]["weights_gzip_bytes"] / 2
    assert "not the latency" in report["note"]
    assert accuracy(model, ctx) > 0.8


# --------------------------------------------------------------------------- knowledge distillation


def test_distillation_changes_the_student_and_reports_the_baseline(ctx):
    import copy

    import torch

    pruned, _ = techniques.apply(_steps("prune:0.6,epochs=0"), ctx)
    plain, taught, control = copy.deepcopy(pruned), copy.deepcopy(pruned), copy.deepcopy(pruned)
    fit(plain, ctx, 1, 2e-3, 64, 0)
    fit(taught, ctx, 1, 2e-3, 64, 0, teacher=ctx.model, temperature=4.0, alpha=0.9)
    fit(control, ctx, 1, 2e-3, 64, 0, teacher=ctx.model, temperature=4.0, alpha=0.0)
    diff = sum(float((a - b).abs().sum().detach()) for a, b in zip(plain.parameters(), taught.parameters()))
    assert diff > 1e-3, "the teacher changes what the student learns"
    same = all(torch.allclose(a, b) for a, b in zip(plain.parameters(), control.parameters()))
    assert same, "with alpha=0 the teacher has no say: the only difference is the teacher"

    model, reports = techniques.apply(_steps("prune:0.6+kd:epochs=1"), ctx)
    kd = reports[1]
    assert reports[0]["fine_tuning"] == "done by the kd step that follows"
    assert kd["baseline_without_teacher"]["epochs"] == kd["distilled"]["epochs"] == 1
    assert kd["distilled"]["accuracy"] == accuracy(model, ctx)
    assert kd["gain_over_baseline"] == pytest.approx(kd["distilled"]["accuracy"] - kd["baseline_without_teacher"]["accuracy"])
    assert kd["distilled"]["epoch_losses"] != kd["baseline_without_teacher"]["epoch_losses"]


def test_kd_needs_a_student(ctx):
    from edgekit.errors import CompressError

    with pytest.raises(CompressError, match="kd needs a smaller student"):
        techniques.apply(_steps("kd"), ctx)


# --------------------------------------------------------------------------- through the compressor


def _onnx_weights(path: str) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}


@pytest.mark.slow
def test_pruned_and_clustered_variant_exports_and_is_judged_against_the_original(ctx, built, tmp_path):
    _, plain = built
    store = ArtifactStore(tmp_path)
    v, cached = build_variant("prune:0.5,epochs=2+cluster:8,epochs=1+onnx:fp32", ctx, store)
    assert v.status == "ok", v.error
    assert not cached
    weights, original = _onnx_weights(v.path), _onnx_weights(plain["onnx:fp32"].path)
    convs = sorted(w.shape[0] for w in weights.values() if w.ndim == 4)
    assert convs and convs < sorted(w.shape[0] for w in original.values() if w.ndim == 4)
    for name, w in weights.items():
        if w.ndim >= 2:  # conv and linear weights: clustered to at most 8 shared values
            assert np.unique(w).size <= 8, (name, np.unique(w).size)
    meta = json.loads((Path(v.path).parent / "variant.json").read_text())
    assert [t["technique"] for t in meta["techniques"]] == ["prune", "cluster"]
    assert meta["techniques"][1]["distinct_values"] and max(meta["techniques"][1]["distinct_values"].values()) <= 8
    assert meta["options"]["artifact"]["artifact_gzip_bytes"] < v.size_bytes
    # parity is against the ORIGINAL model's outputs: same reference accuracy as the plain export
    assert v.metrics["reference_accuracy"] == plain["onnx:fp32"].metrics["accuracy"]
    assert v.metrics["top1_agreement"] < 1.0 and v.metrics["accuracy"] > 0.9
    again, cached = build_variant(v.recipe, ctx, store)
    assert cached and again.id == v.id
    other, cached = build_variant(v.recipe, dataclasses.replace(ctx, techniques=dataclasses.replace(FAST, seed=1)), store)
    assert not cached and other.cache_key != v.cache_key, "technique defaults are part of the cache key"


def test_missing_training_data_fails_the_variant_with_the_fix(ctx, tmp_path):
    spec = dataclasses.replace(ctx.spec, training=None)
    v, _ = build_variant("prune:0.5+onnx:fp32", dataclasses.replace(ctx, spec=spec, training=None), ArtifactStore(tmp_path))
    assert v.status == "failed" and "set [data] training" in v.error


@pytest.mark.slow
def test_cli_compress_uses_the_profiles_techniques_table(workdir):
    from conftest import run_cli

    (workdir / "profiles" / "tiny.toml").write_text(
        '[build]\nrecipes = ["prune:0.5+onnx:fp32"]\n[techniques]\nepochs = 1\nlr = 0.002\n')
    proc = run_cli("compress", "--profile", "tiny", "--json")
    assert proc.returncode == 0, proc.stderr
    (variant,) = json.loads(proc.stdout)["variants"]
    assert variant["status"] == "ok" and variant["recipe"] == "prune:0.5+onnx:fp32"
    (step,) = variant["techniques"]
    assert step["options"]["epochs"] == 1 and step["options"]["lr"] == 0.002
    assert step["after"]["params"] < step["before"]["params"]
    bad = run_cli("compress", "--profile", "tiny", "--recipe", "prune:2+onnx:fp32")
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr and "Traceback" not in bad.stderr
