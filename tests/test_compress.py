"""Real conversions of the real example model, measured on its real evaluation split."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgekit.compress.build import build_variant
from edgekit.compress.store import ArtifactStore, file_sha256
from edgekit.pipeline import Workspace, compress


def test_both_variants_carry_figures(built):
    ctx, variants = built
    fp32, int8 = variants["onnx:fp32"], variants["onnx:int8-static"]
    for v in (fp32, int8):
        assert v.status == "ok", v.error
        assert file_sha256(Path(v.path)) == v.sha256
        assert Path(v.path).stat().st_size == v.size_bytes
        meta = json.loads((Path(v.path).parent / "variant.json").read_text())
        for key in ("id", "recipe", "format", "precision", "sha256", "size_bytes", "metrics", "converters"):
            assert meta[key] == getattr(v, key)
    assert fp32.metrics["accuracy"] > 0.95
    assert fp32.metrics["top1_agreement"] == 1.0 and fp32.metrics["max_abs_diff"] < 1e-4
    assert int8.metrics["top1_agreement"] > 0.95
    assert int8.size_bytes < fp32.size_bytes / 2
    assert int8.options["per_channel"] is True and int8.options["quant_format"] == "QDQ"


def test_int8_really_is_quantized(built):
    _, variants = built
    import onnx

    ops = {n.op_type for n in onnx.load(variants["onnx:int8-static"].path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_accuracy_figure_is_recomputable(built):
    ctx, variants = built
    v = variants["onnx:int8-static"]
    session = ort.InferenceSession(v.path, providers=["CPUExecutionProvider"])
    x, y = ctx.evaluation.inputs["input"], ctx.evaluation.labels
    preds = np.array([session.run(None, {"input": x[i:i + 1]})[0].argmax() for i in range(len(x))])
    assert (preds == y).mean() == v.metrics["accuracy"]


def test_second_compress_is_cached(built, tmp_path):
    ctx, _ = built
    ws = Workspace(tmp_path, tmp_path / "r.db")
    first = compress(ctx, ("onnx:fp32",), ws)
    mtime = Path(first[0][0].path).stat().st_mtime_ns
    second = compress(ctx, ("onnx:fp32",), ws)
    assert [c for _, c in first] == [False] and [c for _, c in second] == [True]
    assert second[0][0].id == first[0][0].id and Path(second[0][0].path).stat().st_mtime_ns == mtime


def test_corrupted_cache_entry_is_rebuilt(built, tmp_path):
    ctx, _ = built
    store = ArtifactStore(tmp_path)
    v, _ = build_variant("onnx:fp32", ctx, store)
    Path(v.path).write_bytes(b"garbage")
    again, cached = build_variant("onnx:fp32", ctx, store)
    assert not cached and file_sha256(Path(again.path)) == again.sha256 == v.sha256


def test_a_failing_recipe_is_recorded_and_the_batch_goes_on(built, tmp_path):
    ctx, _ = built
    no_calibration = type(ctx)(**{**ctx.__dict__, "calibration": None})
    results = compress(no_calibration, ("onnx:int8-static", "onnx:fp32"), Workspace(tmp_path, tmp_path / "r.db"))
    (failed, _), (ok, _) = results
    assert failed.status == "failed" and "calibration" in failed.error
    assert ok.status == "ok"
    assert not list(tmp_path.glob("cache/.build-*")), "a failed build leaves no staging folder"


def test_compress_leaves_the_context_it_was_handed_as_it_was(built, tmp_path):
    # A fleet run hands one context to every target: one target's settings must not reach the next.
    from edgekit.settings import TechniqueSettings

    ctx, _ = built
    before = (ctx.techniques, ctx.isa, ctx.max_accuracy_drop)
    other = TechniqueSettings(**{**ctx.techniques.__dict__, "seed": ctx.techniques.seed + 1})
    workspace = Workspace(tmp_path, tmp_path / "r.db")
    compress(ctx, ("onnx:fp32",), workspace, techniques=other)
    compress(ctx, ("onnx:fp32",), workspace, techniques=other, isa=("avx2",), max_accuracy_drop=0.5)
    assert (ctx.techniques, ctx.isa, ctx.max_accuracy_drop) == before


def test_a_build_killed_half_way_is_cleared_by_the_next_and_a_running_one_is_not(built, tmp_path):
    import os
    import time

    ctx, _ = built
    store = ArtifactStore(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    dead = tmp_path / ".build-999999999-abc"  # no such process: killed mid-build
    alive = tmp_path / f".build-{os.getpid()}-def"  # this process: a build in progress
    old_style = tmp_path / ".build-x1y2z3"  # an older edgekit's name, with no pid in it
    for folder in (dead, alive, old_style):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"half")
    day_ago = time.time() - 2 * 86400
    os.utime(old_style, (day_ago, day_ago))
    v, _ = build_variant("onnx:fp32", ctx, store)
    assert v.status == "ok"
    assert not dead.exists() and not old_style.exists() and alive.exists()
