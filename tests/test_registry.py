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


def test_the_golden_list_covers_every_shipped_profile_recipe_and_step():
    """A new recipe or step is pinned before it ships: add it to USED or OPTIONS, then regenerate."""
    from edgekit.compress.registry import RECIPES, TECHNIQUES
    from edgekit.config import load_profile

    for name in ("balanced", "latency", "all-formats"):
        for recipe in load_profile(name).recipes:
            assert recipe in USED, f"{recipe} (profiles/{name}.toml) is not pinned in the golden file"
    pinned = [parse_recipe(text) for text in USED + OPTIONS]
    assert set(RECIPES) == {r.base for r in pinned}
    assert set(TECHNIQUES) == {s.name for r in pinned for s in r.techniques}
    for base, recipe in RECIPES.items():
        for option in recipe.options:
            assert any(r.base == base and option.name in r.opts for r in pinned) or option.name == "fold_bn", \
                f"{base}?{option.name}=... is not pinned"


# --------------------------------------------------------------------------- the declarations


def test_every_declared_function_exists_and_takes_what_it_is_given():
    """A builder or step function named in a declaration is looked up only when it runs: check them all now."""
    import importlib
    import inspect

    from edgekit.compress.registry import RECIPES, TECHNIQUES

    for r in RECIPES.values():
        module, _, function = r.builder.partition(":")
        assert callable(getattr(importlib.import_module(f"edgekit.compress.{module}"), function)), r.builder
    for t in TECHNIQUES.values():
        module, _, function = t.apply.partition(":")
        params = inspect.signature(getattr(importlib.import_module(f"edgekit.compress.{module}"), function)).parameters
        assert set(t.place) <= set(params), f"{t.apply} does not take {set(t.place) - set(params)}"


def test_the_techniques_table_is_the_settings_dataclass():
    """PROFILE_OPTIONS declares `[techniques]`; its names and defaults are TechniqueSettings' own."""
    import dataclasses

    from edgekit.compress.registry import PROFILE_OPTIONS, TECHNIQUES

    fields = {f.name: f.default for f in dataclasses.fields(TechniqueSettings)}
    assert list(PROFILE_OPTIONS) == list(fields)
    assert {k: o.default for k, o in PROFILE_OPTIONS.items()} == fields
    for t in TECHNIQUES.values():  # a step reads only keys the table has
        assert set(t.reads) <= set(PROFILE_OPTIONS), t.name


def test_option_parsing_and_checking():
    from edgekit.compress.options import Option

    ratio = Option("ratio", "float", None, "", low=0.0, high=1.0, open_low=True, open_high=True)
    assert ratio.parse(" .5 ") == 0.5 and ratio.values == "between 0 and 1 (exclusive)"
    for bad, words in (("0", "between 0 and 1"), ("1", "between 0 and 1"), ("nan", "between"),
                       ("half", "not a number")):
        with pytest.raises(ValueError, match=words):
            ratio.parse(bad)
    count = Option("epochs", "int", 2, "", low=0)
    assert count.parse("016") == 16 and count.check(3) == 3
    for bad in (2.0, True, "3", -1):  # TOML values keep their type: 2.0 is not a whole number, true not one at all
        with pytest.raises(ValueError, match="must be a whole number >= 0"):
            count.check(bad)
    flag = Option("fold_bn", "bool", True, "")
    assert flag.parse("FALSE") is False and flag.spelling(" TRUE ") == "true"
    with pytest.raises(ValueError, match="must be true or false"):
        flag.parse("1")
    number = Option("percentile", "float", 99.999, "", low=50.0, high=100.0)
    assert number.spelling(" 99.990 ") == "99.990", "a number keeps its spelling: it is part of names and keys"
    with pytest.raises(ValueError, match="must be a number in 50..100"):
        number.check(float("inf"))
    with pytest.raises(ValueError, match="choices go with type choice"):
        Option("x", "int", 1, "", choices=("a",))


@pytest.mark.parametrize("recipe, words", [
    ("onnx:int8-static?per_channel=maybe", r"option per_channel='maybe' must be true or false\. Fix: write e\.g\. "
                                           r"per_channel=true$"),
    ("onnx:int8-dynamic?types=s8s8", r"must be one of u8s8, u8s8-reduced, u8u8\. Fix: write e\.g\. types=u8s8$"),
    ("onnx:int8-mixed?budget=", r"'budget=' is not key=value"),
    ("onnx:fp16?fold_bn=true&keep_io_types=no", "keep_io_types='no' must be true or false"),
    ("prune:0.5,lr=inf+onnx:fp32", r"prune lr='inf': must be a number > 0\. Fix: write e\.g\. prune:0\.5,lr=0\.001$"),
    ("cluster:1+onnx:fp32", r"cluster clusters='1': must be a whole number in 2\.\.65536\. "
                            r"Fix: write e\.g\. cluster:16$"),
    ("cluster:16.5+onnx:fp32", "is not a whole number"),
    ("kd:alpha=2+onnx:fp32", r"kd alpha='2': must be a number in 0\.\.1\. Fix: write e\.g\. kd:alpha=0\.9$"),
    ("kd:temperature=4+kd+prune:0.5+onnx:fp32", "kd appears twice. Fix: keep one kd step"),
    ("sparsity:0.5+kd+onnx:fp32", "put kd before sparsity"),
    ("prune-l1+onnx:fp32", "prune needs its ratio. Fix: write e.g. prune:0.5"),
    ("merge:0.3,criterion=l1+onnx:fp32", "must be one of cosine, l2"),
])
def test_bad_recipes_say_what_to_write(recipe, words):
    with pytest.raises(SpecError, match=words):
        parse_recipe(recipe)


def test_builders_read_the_declared_defaults():
    """What a builder gets when the name says nothing is the declaration's default, per recipe."""
    assert parse_recipe("onnx:int8-static").value("per_channel") is True
    assert parse_recipe("onnx:int8-dynamic").value("per_channel") is False
    assert parse_recipe("onnx:int8-dynamic").value("types") == "u8s8"
    assert parse_recipe("onnx:int8-static").value("types") is None  # the target's ISA decides (build.context_defaults)
    assert parse_recipe("onnx:int8-mixed?budget=5e-3").value("budget") == 0.005
    assert parse_recipe("onnx:int8-static?calibration=Percentile&percentile=99.9").value("percentile") == 99.9
    assert parse_recipe("tflite:fp32?fold_bn=false").value("fold_bn") is False
    with pytest.raises(KeyError):
        parse_recipe("onnx:fp32").value("budget")


def test_merge_steps_default_to_no_training_whatever_the_profile_says():
    steps = parse_recipe("merge:0.3+kd+onnx:fp32").techniques
    opts = steps[0].resolve(TechniqueSettings(epochs=7, importance="taylor"))
    assert opts["epochs"] == 0 and opts["criterion"] == "cosine" and "importance" not in opts
    assert steps[1].resolve(TechniqueSettings(epochs=7))["epochs"] == 7


# --------------------------------------------------------------------------- one catalog, three readers


def test_select_imports_no_compress_code():
    import ast

    import edgekit.select

    tree = ast.parse(Path(edgekit.select.__file__).read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in imported if "compress" in m]


def test_the_catalog_names_only_what_the_parser_accepts():
    from edgekit.compress.catalog import catalog

    doc = catalog()
    json.dumps(doc, allow_nan=False)
    for r in doc["recipes"]:
        assert parse_recipe(r["name"]).name == r["name"]
        for o in r["options"]:
            value = (o["choices"] or [o["default"] if o["default"] is not None else o["low"]])[0]
            text = str(value).lower() if isinstance(value, bool) else str(value)
            assert parse_recipe(f"{r['name']}?{o['name']}={text}").opts == {o["name"]: text}
    for t in doc["techniques"]:
        for o in t["options"]:
            value = o["choices"][0] if o["choices"] else o["low"] if o["low"] is not None and not o["open_low"] else 1
            head = f"{t['example']}," if t["value"] else f"{t['name']}:"
            assert parse_recipe(f"{head}{o['name']}={value}+onnx:fp32").techniques[0].name == t["name"]


def _readme_tables(*args: str, readme: Path | None = None):
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "readme_tables.py"
    extra = ["--readme", str(readme)] if readme else []
    return subprocess.run([sys.executable, str(script), *args, *extra], capture_output=True, text=True, timeout=60)


def test_the_readme_tables_are_current_and_the_check_catches_a_stale_one(tmp_path):
    proc = _readme_tables("--check")
    assert proc.returncode == 0, proc.stderr
    readme = Path(__file__).resolve().parent.parent / "README.md"
    stale = tmp_path / "README.md"
    stale.write_text(readme.read_text().replace("| `onnx:fp16` |", "| `onnx:fp16` (old) |", 1))
    proc = _readme_tables("--check", readme=stale)
    assert proc.returncode == 1 and "recipes are stale" in proc.stderr and "(old)" in stale.read_text()
    assert _readme_tables(readme=stale).returncode == 0 and stale.read_text() == readme.read_text()
    stale.write_text("# no markers\n")
    proc = _readme_tables("--check", readme=stale)
    assert proc.returncode == 2 and "0 'recipes' sections" in proc.stderr and "Fix:" in proc.stderr


def test_edgekit_recipes_prints_the_catalog(tmp_path):
    import subprocess
    import sys

    from edgekit.compress.catalog import catalog, markdown

    def run(*args):
        return subprocess.run([sys.executable, "-m", "edgekit", "recipes", *args], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})

    as_json = run("--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == json.loads(json.dumps(catalog()))
    assert run("--markdown").stdout == markdown()
    table = run()
    assert table.returncode == 0
    for name in ("onnx:int8-mixed", "executorch:int8", "budget=0..1", "prune:RATIO[,importance=l1|l2|taylor",
                 "[techniques] in a profile", "module:function"):
        assert name in table.stdout, name
