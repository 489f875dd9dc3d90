"""Technique steps on the real digits model and data: each test checks a real effect."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekit.compress import techniques
from edgekit.compress.build import build_variant
from edgekit.compress.registry import parse_recipe
from edgekit.compress.store import ArtifactStore
from edgekit.compress.training import accuracy, augment_batch, fit
from edgekit.errors import CompressError, SpecError
from edgekit.config import load_profile
from edgekit.settings import TechniqueSettings

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
    with pytest.raises(SpecError, match=r"\[techniques\] importance: 'random': must be one of l1, l2, taylor"):
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
    with pytest.raises(CompressError, match="kd needs a smaller student"):
        techniques.apply(_steps("kd"), ctx)


# --------------------------------------------------------------------------- augmentation and schedule


@pytest.mark.parametrize("side,most", [(28, 2), (8, 1)])
def test_shift_augmentation_moves_each_image_by_a_few_pixels(side, most):
    import torch

    x = torch.rand(256, 1, side, side) + 0.1  # no zeros inside, so the zero fill shows where an image moved
    a = augment_batch(x, "shift", torch.Generator().manual_seed(0))
    b = augment_batch(x, "shift", torch.Generator().manual_seed(0))
    assert torch.equal(a, b), "the same seed gives the same transforms"
    assert augment_batch(x, "none", torch.Generator()) is x
    moves = set()
    for orig, moved in zip(x, a):
        found = [(dy, dx) for dy in range(-most, most + 1) for dx in range(-most, most + 1)
                 if torch.equal(moved, _shifted(orig, dy, dx))]
        assert found, f"every output is the input moved by at most {most} whole pixels, zero filled"
        moves.add(found[0])
    assert len(moves) == (2 * most + 1) ** 2, moves


def _shifted(img, dy: int, dx: int):
    import torch

    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        img[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_affine_augmentation_changes_images_but_keeps_them_recognisable(ctx):
    import torch

    x = torch.from_numpy(ctx.evaluation.inputs["input"][:256])
    labels = torch.from_numpy(np.asarray(ctx.evaluation.labels[:256]))
    a = augment_batch(x, "affine", torch.Generator().manual_seed(1))
    assert a.shape == x.shape and not torch.equal(a, x)
    assert float((a - x).abs().mean()) > 0.05 * float(x.abs().mean())
    with torch.no_grad():
        agree = float((ctx.model(a).argmax(1) == labels).float().mean())
    assert agree > 0.5, "small transforms: the original model still reads most digits"


def test_kd_with_augmentation_teacher_labels_the_transformed_images(ctx):
    """The teacher and the student see the same transformed batch; the no-teacher baseline sees the
    very same transformed images; the raw training images are never seen as such."""
    import copy

    import torch

    seen: dict[str, list] = {"teacher": [], "student": []}
    teacher = _Recorder(ctx.model, seen["teacher"])
    pruned, _ = techniques.apply(_steps("prune:0.6,epochs=0"), ctx)
    student, baseline = copy.deepcopy(pruned), copy.deepcopy(pruned)
    hook = student.register_forward_pre_hook(lambda _, args: seen["student"].append(args[0].clone()))
    fit(student, ctx, 1, 2e-3, 64, 0, teacher=teacher, augment="affine")
    hook.remove()
    base_seen: list = []
    baseline.register_forward_pre_hook(lambda _, args: base_seen.append(args[0].clone()))
    fit(baseline, ctx, 1, 2e-3, 64, 0, augment="affine")
    assert len(seen["teacher"]) == len(seen["student"]) == len(base_seen) > 5
    assert all(torch.equal(t, s) for t, s in zip(seen["teacher"], seen["student"]))
    assert all(torch.equal(b, s) for b, s in zip(base_seen, seen["student"]))
    raw = torch.from_numpy(ctx.training.inputs["input"])
    first = seen["student"][0]
    assert not any(torch.equal(first[0], r) for r in raw), "the student never sees an untransformed image"

    model, reports = techniques.apply(_steps("prune:0.6+kd:epochs=1,augment=shift,schedule=cosine"), ctx)
    kd = reports[1]
    assert kd["augment"] == "shift" and kd["schedule"] == "cosine"
    assert kd["distilled"]["augment"] == kd["baseline_without_teacher"]["augment"] == "shift"
    assert kd["options"]["augment"] == "shift"


class _Recorder:
    def __init__(self, model, sink):
        self.model, self.sink = model, sink

    def eval(self):
        self.model.eval()
        return self

    def __call__(self, x):
        self.sink.append(x.clone())
        return self.model(x)


def test_cosine_schedule_shrinks_the_steps_of_the_last_epoch(ctx):
    import copy

    pruned, _ = techniques.apply(_steps("prune:0.6,epochs=0"), ctx)

    def step_sizes(schedule: str) -> list[float]:
        model = copy.deepcopy(pruned)
        prev = [p.detach().clone() for p in model.parameters()]
        sizes = []

        def after():
            sizes.append(sum(float((p - q).abs().sum()) for p, q in zip(model.parameters(), prev)))
            for p, q in zip(model.parameters(), prev):
                q.copy_(p)
        fit(model, ctx, 3, 2e-3, 64, 0, after_step=after, schedule=schedule)
        return sizes

    def last_over_first(sizes):
        third = len(sizes) // 3
        return sum(sizes[-third:]) / sum(sizes[:third])

    constant, cosine = step_sizes("constant"), step_sizes("cosine")
    assert last_over_first(cosine) < 0.6 * last_over_first(constant), (last_over_first(cosine), last_over_first(constant))


def test_augment_and_schedule_options_are_validated(ctx, tmp_path):
    step = parse_recipe("prune:0.5+kd:augment=affine,schedule=cosine+onnx:fp32").techniques[1]
    assert step.text == "kd:augment=affine,schedule=cosine"
    assert step.resolve(dataclasses.replace(FAST, augment="shift"))["augment"] == "affine"
    assert parse_recipe("prune:0.5+kd+onnx:fp32").techniques[1].resolve(
        dataclasses.replace(FAST, augment="shift"))["augment"] == "shift", "the profile default applies"
    with pytest.raises(SpecError, match="augment='blur': must be one of none, shift, affine"):
        parse_recipe("prune:0.5+kd:augment=blur+onnx:fp32")
    bad = tmp_path / "bad.toml"
    bad.write_text('[build]\nrecipes = ["onnx:fp32"]\n[techniques]\nschedule = "step"\n')
    with pytest.raises(SpecError, match=r"\[techniques\] schedule: 'step': must be one of constant, cosine"):
        load_profile(str(bad))
    from edgekit.settings import InputSpec

    flat = dataclasses.replace(ctx.spec, inputs=(InputSpec("input", (1, 64), "float32"),))
    with pytest.raises(CompressError, match="augment=shift transforms images"):
        fit(ctx.model, dataclasses.replace(ctx, spec=flat), 1, 1e-3, 64, 0, augment="shift")


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
