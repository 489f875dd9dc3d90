"""The declared catalog of formats, recipes, technique steps and their options.

The golden file pins, for every recipe the shipped profiles, the tests, the scripts and the docs
use (and one per declared option), the canonical name, what the builder reads and the artifact
cache key built by the real `variant_key`: a change to how recipes are declared must not rename a
variant or orphan a cached artifact. After an intended change (a new BUILD_RULES, say) regenerate
it with EDGEKIT_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgekit.compress import build
from edgekit.compress.build import context_defaults, variant_key
from edgekit.compress.registry import parse_recipe
from edgekit.compress.techniques import options_key
from edgekit.errors import SpecError
from edgekit.settings import InputSpec, TechniqueSettings

GOLDEN = Path(__file__).parent / "golden" / "recipe_keys.json"

# every recipe written in profiles/, tests/, scripts/, README.md and BENCHMARKS.md, as written there
USED = [
    "cluster:16,epochs=3+onnx:fp32", "executorch:fp32", "executorch:int8", "merge:0.3+kd+onnx:fp32",
    "merge:0.3+onnx:fp32", "merge:0.3+onnx:int8-static", "merge:0.3+torchscript:fp32",
    "merge:0.3, criterion=l2+onnx:int8-static", "merge:0.3,criterion=l2+onnx:fp32",
    "merge:0.3,criterion=l2+onnx:int8-static", "merge:0.3,criterion=l2,epochs=2+onnx:fp32",
    "merge:0.3,epochs=1+onnx:fp32", "merge:0.3,epochs=2+onnx:fp32", "merge:0.3,epochs=3+onnx:fp32",
    "merge:0.5+onnx:fp32", "merge:0.5,criterion=l2+onnx:fp32", "merge:0.5,criterion=l2,epochs=2+onnx:fp32",
    "merge:0.5,epochs=2+onnx:fp32", "onnx:fp16", "onnx:fp32", "onnx:fp32?fold_bn=false", "onnx:int8-dynamic",
    "onnx:int8-mixed", "onnx:int8-mixed?budget=0.005", "onnx:int8-static", "onnx:int8-static?calibration=entropy",
    "onnx:int8-static?calibration=entropy&types=u8u8",
    "onnx:int8-static?calibration=entropy&types=u8u8&per_channel=true",
    "onnx:int8-static?calibration=percentile&types=s8s8", "onnx:int8-static?types=s8s8",
    "onnx:int8-static?types=u8u8", "onnx:int8-static?types=u8u8&calibration=Entropy",
    "onnx:int8-static?types=u8u8&calibration=entropy",
    "prune-taylor:0.3, iterations=2+ kd:alpha=0.5 +onnx:int8-static", "prune:0.3+kd+onnx:fp32",
    "prune:0.3+kd+onnx:int8-static", "prune:0.3+onnx:fp32", "prune:0.3+onnx:int8-static",
    "prune:0.3,epochs=0+onnx:fp32", "prune:0.3,epochs=2+onnx:fp32",
    "prune:0.3,importance=taylor,iterations=2+kd:alpha=0.5+onnx:int8-static", "prune:0.5+kd+onnx:fp32",
    "prune:0.5+kd+onnx:int8-static", "prune:0.5+kd:augment=affine,schedule=cosine+onnx:fp32",
    "prune:0.5+kd:augment=none,schedule=constant+onnx:int8-static",
    "prune:0.5+kd:epochs=60,augment=affine,schedule=cosine+onnx:int8-static", "prune:0.5+onnx:fp32",
    "prune:0.5+onnx:int8-static", "prune:0.5,epochs=0+onnx:fp32", "prune:0.5,epochs=2+cluster:8,epochs=1+onnx:fp32",
    "prune:0.5,epochs=2+onnx:fp32", "sparsity:0.8,epochs=10+onnx:fp32", "tflite:fp16", "tflite:fp32",
    "tflite:int8-dynamic", "tflite:int8-static", "torchscript:fp32", "torchscript:int8",
]
# every other declared option at least once, and the spellings canonicalisation folds together
OPTIONS = [
    "onnx:fp16?keep_io_types=false", "onnx:int8-dynamic?per_channel=TRUE&types=u8s8-reduced&fold_bn=false",
    "onnx:int8-mixed?budget=0.01&calibration=percentile&percentile=99.9&per_channel=false&types=u8s8",
    "onnx:int8-static?percentile=99.99&calibration=percentile", "onnx:int8-static? types = U8S8 ",
    "tflite:int8-static?fold_bn=false", "executorch:int8?fold_bn=true", "torchscript:int8?fold_bn=false",
    "prune:.5+onnx:fp32", "prune-l1:0.5+onnx:fp32", "prune-l2:0.25,lr=0.01+onnx:fp32",
    "prune:0.5,importance=l1,iterations=3,epochs=1,lr=1e-3+onnx:fp32",
    "prune:0.4,augment=shift,schedule=cosine+onnx:fp32", "merge:0.25,criterion=cosine,lr=0.5+onnx:fp32",
    "sparsity:0.5+onnx:int8-dynamic", "sparsity:0.9,lr=2e-3,augment=affine+tflite:fp32", "cluster:016+onnx:fp32",
    "cluster:256,epochs=0,schedule=constant+onnx:fp16", "kd+onnx:fp32", "kd:temperature=2,alpha=1+onnx:fp32",
    "kd:temperature=2.5,alpha=0,epochs=5,lr=0.1+prune:0.5+onnx:fp32", "KD:temperature=3+onnx:int8-static",
    "prune:0.5+kd+cluster:4+onnx:fp32", "merge:0.3+sparsity:0.5+onnx:fp32",
]


def _ctx(isa):
    """What variant_key reads, fixed: so the key depends on the recipe and the technique defaults alone."""
    digest = SimpleNamespace(digest=lambda: "data-digest")
    spec = SimpleNamespace(inputs=[InputSpec("input", (1, 1, 8, 8))], dynamic_batch=False, training=None)
    return SimpleNamespace(isa=isa, max_accuracy_drop=0.01, model_digest="model-digest", spec=spec,
                           calibration=digest, evaluation=digest, techniques=TechniqueSettings())


ISAS = {"unknown": None, "x86": ("sse4_2", "avx2"), "vnni": ("avx2", "avx512_vnni"), "arm": ("fp", "asimd")}


def facts(text: str) -> dict:
    """What a recipe name decides: its canonical name, what the builder reads, and its cache keys."""
    r = parse_recipe(text)
    return {
        "name": r.name, "format": r.format, "precision": r.precision, "runtime": r.runtime, "suffix": r.suffix,
        "builder": r.builder, "extra": r.extra, "uses_calibration": r.uses_calibration, "opts": r.opts,
        "steps": [s.text for s in r.techniques],
        "step_options": options_key(r.techniques, TechniqueSettings()),
        "defaults": {isa: context_defaults(r, _ctx(flags)) for isa, flags in ISAS.items()},
        "keys": {isa: variant_key(r, _ctx(flags)) for isa, flags in ISAS.items()},
    }


@pytest.fixture
def fixed_converters(monkeypatch):
    """Converter versions change with the environment, not with the recipe: pin them."""
    monkeypatch.setattr(build, "converter_versions", lambda fmt="onnx": {"edgekit": "pinned", "format": fmt})


def test_names_and_cache_keys_are_unchanged(fixed_converters):
    found = {text: facts(text) for text in USED + OPTIONS}
    if os.environ.get("EDGEKIT_UPDATE_GOLDEN"):
        lines = [f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(found.items())]
        GOLDEN.write_text("{\n" + ",\n".join(lines) + "\n}\n")  # one recipe a line: diffs name the recipe
    golden = json.loads(GOLDEN.read_text())
    assert sorted(found) == sorted(golden), "the recipe list changed: regenerate with EDGEKIT_UPDATE_GOLDEN=1"
    for text in found:
        assert json.loads(json.dumps(found[text])) == golden[text], text


def test_the_golden_list_covers_every_shipped_profile():
    from edgekit.config import load_profile

    for name in ("balanced", "latency", "all-formats"):
        for recipe in load_profile(name).recipes:
            assert recipe in USED, f"{recipe} (profiles/{name}.toml) is not pinned in the golden file"
