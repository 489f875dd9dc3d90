"""Recipe names with options, ISA-aware defaults, and the ONNX fp16 / dynamic / static builds."""

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.compress.build import context_defaults, variant_key
from edgekit.compress.isa import int8_types
from edgekit.compress.merge import fold_batchnorm
from edgekit.compress.registry import parse_recipe
from edgekit.errors import SpecError
from edgekit.pipeline import Workspace, compress


@pytest.fixture(scope="module")
def onnx_variants(built, tmp_path_factory):
    ctx, _ = built
    home = tmp_path_factory.mktemp("recipes")
    recipes = ("onnx:fp16", "onnx:int8-dynamic", "onnx:int8-static?types=u8u8&calibration=entropy",
               "onnx:fp32?fold_bn=false")
    return {v.recipe: v for v, _ in compress(ctx, recipes, Workspace(home, home / "r.db"))}


def test_recipe_options_are_canonical_and_validated():
    a = parse_recipe("onnx:int8-static?types=u8u8&calibration=Entropy")
    b = parse_recipe("onnx:int8-static?calibration=entropy&types=u8u8")
    assert a == b and a.name == "onnx:int8-static?calibration=entropy&types=u8u8"
    assert a.opts == {"calibration": "entropy", "types": "u8u8"} and a.base == "onnx:int8-static"
    with pytest.raises(SpecError, match="unknown option 'bits'.*calibration"):
        parse_recipe("onnx:int8-static?bits=4")
    with pytest.raises(SpecError, match="u8s8, u8s8-reduced, u8u8, s8s8"):
        parse_recipe("onnx:int8-static?types=u4")
    with pytest.raises(SpecError, match="not key=value"):
        parse_recipe("onnx:int8-static?entropy")
    with pytest.raises(SpecError, match="not a number"):
        parse_recipe("onnx:int8-mixed?budget=half")


def test_isa_picks_the_int8_default_and_keys_the_cache(built):
    ctx, _ = built
    assert int8_types(("sse4_2", "avx2", "fma"))[0] == "u8s8-reduced"
    assert "without VNNI" in int8_types(("avx2",))[1]
    assert int8_types(("avx2", "avx512_vnni"))[0] == "u8s8"
    assert int8_types(("fp", "asimd", "asimddp"))[0] == "u8s8"
    assert int8_types(None)[0] == "u8s8-reduced" and "unknown" in int8_types(None)[1]
    recipe = parse_recipe("onnx:int8-static")
    vnni = type(ctx)(**{**ctx.__dict__, "isa": ("avx2", "avx512_vnni")})
    plain = type(ctx)(**{**ctx.__dict__, "isa": ("avx2",)})
    assert context_defaults(recipe, vnni) == {"types": "u8s8"}
    assert variant_key(recipe, vnni) != variant_key(recipe, plain)
    explicit = parse_recipe("onnx:int8-static?types=s8s8")
    assert variant_key(explicit, vnni) == variant_key(explicit, plain), "an explicit choice ignores the ISA"


def test_default_static_records_why_it_chose_its_types(built):
    _, variants = built
    opts = variants["onnx:int8-static"].options
    assert opts["types"] == "u8s8-reduced" and opts["reduce_range"] is True and "ISA unknown" in opts["types_reason"]


def test_fp16_halves_the_weights_and_keeps_float32_io(built, onnx_variants):
    _, base = built
    v = onnx_variants["onnx:fp16"]
    assert v.status == "ok", v.error
    model = onnx.load(v.path)
    assert {i.data_type for i in model.graph.initializer if i.data_type in (1, 10)} == {10}  # all FLOAT16
    assert model.graph.input[0].type.tensor_type.elem_type == 1 and v.options["io_dtype"] == "float32"
    assert 0.4 < v.size_bytes / base["onnx:fp32"].size_bytes < 0.6
    assert v.metrics["top1_agreement"] >= 0.99 and v.metrics["max_abs_diff"] < 0.05


def test_dynamic_int8_warns_on_conv_nets(onnx_variants):
    v = onnx_variants["onnx:int8-dynamic"]
    assert v.status == "ok", v.error
    ops = {n.op_type for n in onnx.load(v.path).graph.node}
    assert "ConvInteger" in ops and any("ConvInteger" in w for w in v.warnings)
    assert v.metrics["top1_agreement"] > 0.95


def test_static_options_reach_the_quantizer(onnx_variants):
    v = onnx_variants["onnx:int8-static?calibration=entropy&types=u8u8"]
    assert v.status == "ok", v.error
    assert (v.options["calibration"], v.options["weight_type"], v.options["types_reason"]) == \
        ("Entropy", "QUInt8", "set in the recipe")
    model = onnx.load(v.path)
    weight_zero_points = [i for i in model.graph.initializer if i.name.endswith("zero_point") and "weight" in i.name]
    assert weight_zero_points and all(i.data_type == onnx.TensorProto.UINT8 for i in weight_zero_points)
    assert v.metrics["top1_agreement"] > 0.95


def test_batchnorm_folding_preserves_outputs_and_removes_nodes(built, onnx_variants):
    import torch

    ctx, base = built
    folded, report = fold_batchnorm(ctx.model)
    assert report["folded"] == [["0", "1"], ["3", "4"]]
    assert report["torch_nodes_after"] == report["torch_nodes_before"] - 2
    x = torch.from_numpy(ctx.evaluation.inputs["input"][:32])
    with torch.no_grad():
        assert torch.allclose(folded(x), ctx.model(x), atol=1e-4)
    merged, unmerged = base["onnx:fp32"], onnx_variants["onnx:fp32?fold_bn=false"]
    assert merged.options["layer_merging"]["applied"] and not unmerged.options["layer_merging"]["applied"]
    ops = lambda v: [n.op_type for n in onnx.load(v.path).graph.node]  # noqa: E731
    # the dynamo exporter's own optimiser folds BN too, so both ONNX graphs end up the same size
    assert "BatchNormalization" not in ops(merged) + ops(unmerged)
    assert merged.options["layer_merging"]["artifact_nodes"] == len(ops(merged)) == len(ops(unmerged))


def test_variant_over_the_budget_is_flagged(built, tmp_path):
    ctx, _ = built
    strict = type(ctx)(**{**ctx.__dict__, "max_accuracy_drop": -1.0})  # nothing can meet a negative budget
    (v, _), = compress(strict, ("onnx:fp32",), Workspace(tmp_path, tmp_path / "r.db"))
    assert v.metrics["within_budget"] is False and any("exceeds the budget" in w for w in v.warnings)
    (again, cached), = compress(ctx, ("onnx:fp32",), Workspace(tmp_path, tmp_path / "r.db"), max_accuracy_drop=0.5)
    assert cached and again.metrics["within_budget"] is True and not again.warnings


@pytest.mark.parametrize("recipe", ["onnx:int8-static?calibration=percentile&percentile=nan",
                                    "onnx:int8-mixed?budget=-inf", "onnx:int8-mixed?budget=2"])
def test_numeric_options_must_be_finite_and_in_range(recipe):
    from edgekit.errors import SpecError

    with pytest.raises(SpecError, match=r"must be a number in (50\.\.100|0\.\.1)\. Fix: write e\.g\. \w+=[0-9.]+$"):
        parse_recipe(recipe)
