"""Neuron merging (`merge:RATIO`): exact on scaled copies, falls back to pruning where it cannot be,
exports like every technique step, and its recorded errors match an independent computation."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.compress import neuron_merge, techniques
from edgekit.compress.build import build_variant
from edgekit.compress.context import BuildContext
from edgekit.compress.registry import parse_recipe
from edgekit.compress.store import ArtifactStore
from edgekit.compress.training import accuracy
from edgekit.errors import CompressError, SpecError
from edgekit.model import Dataset
from edgekit.settings import InputSpec, ModelSpec, TechniqueSettings


def _steps(text: str):
    return parse_recipe(text + "+onnx:fp32").techniques


def _ctx(model, shape, ignore=(), calibration: int = 16) -> BuildContext:
    spec = ModelSpec(name="pair", inputs=(InputSpec("input", shape, "float32"),))
    rng = np.random.default_rng(1)
    cal = Dataset({"input": rng.standard_normal((calibration, *shape[1:])).astype(np.float32)})
    return BuildContext(spec=spec, model=model.eval(), model_digest="t", calibration=cal, evaluation=None,
                        reference=None, techniques=TechniqueSettings(ignore=tuple(ignore)))


def _randomise_bn(net) -> None:
    gen = torch.Generator().manual_seed(3)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def _make_copy(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, src: int, dst: int, z: float) -> None:
    """Set channel `dst` so its output after conv (+ BN) is exactly z times channel `src`'s, with
    BN statistics of its own: the copy holds only once BN is taken into account."""
    with torch.no_grad():
        if bn is None:
            conv.weight[dst] = z * conv.weight[src]
            conv.bias[dst] = z * conv.bias[src]
            return
        a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        b = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        folded_bias = a[src] * b[src] + bn.bias[src] - a[src] * bn.running_mean[src]
        conv.weight[dst] = z * a[src] * conv.weight[src] / a[dst]
        bn.bias[dst] = z * folded_bias - a[dst] * b[dst] + a[dst] * bn.running_mean[dst]


def _pair_net(activation: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), activation,
                        nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 8 * 8, 3))
    _randomise_bn(net)
    return net.eval()


def _out(model, x):
    with torch.no_grad():
        return model(x)


X = torch.from_numpy(np.random.default_rng(7).standard_normal((32, 2, 8, 8)).astype(np.float32))


# --------------------------------------------------------------------------- exact merges


def test_a_scaled_copy_through_batchnorm_and_relu_merges_exactly():
    net = _pair_net(nn.ReLU())
    _make_copy(net[0], net[1], src=1, dst=4, z=2.5)
    ctx = _ctx(net, (1, 2, 8, 8), ignore=("3",))  # only the pair 0 -> 3 is merged
    merged, (report,) = techniques.apply(_steps("merge:0.16"), ctx)  # 6 -> 5 channels
    assert merged[0].out_channels == 5 and merged[3].in_channels == 5
    (layer,) = report["layers"]
    assert layer["layer"] == "0" and layer["merged"] and layer["consumers"] == ["3"]
    (m,) = layer["merges"]
    assert {m["channel"], m["into"]} == {1, 4}, "the copy, or the channel it copies, goes"
    assert m["similarity"] == pytest.approx(1.0, abs=1e-6)
    assert m["scale"] == pytest.approx(2.5 if m["channel"] == 4 else 0.4, rel=1e-6)
    assert "exact for scale > 0" in layer["exactness"]
    assert torch.allclose(_out(merged, X), _out(net, X), rtol=1e-5, atol=1e-5)
    assert layer["compensation_error"] < 1e-6
    assert layer["error_if_pruned"] > 0.05, "pruning the same channel does change the output"

    pruned, _ = techniques.apply(_steps("prune:0.16,epochs=0"), ctx)
    assert not torch.allclose(_out(pruned, X), _out(net, X), rtol=1e-3, atol=1e-3)


def test_a_negative_copy_merges_exactly_where_only_linear_ops_lie_between():
    """A residual stream (BN, add, no activation): any sign of scale is exact, and both producers of
    the stream must carry the copy, with one scale, for the merge to be exact."""

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.stem_bn = nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
            self.a, self.b, self.b_bn = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
            self.head = nn.Conv2d(8, 3, 1)

        def forward(self, x):
            s = self.stem_bn(self.stem(x))
            s = s + self.b_bn(self.b(torch.relu(self.a(s))))
            return self.head(s).mean((2, 3))

    torch.manual_seed(0)
    net = Residual()
    _randomise_bn(net)
    net.eval()
    _make_copy(net.stem, net.stem_bn, src=2, dst=5, z=-0.5)
    _make_copy(net.b, net.b_bn, src=2, dst=5, z=-0.5)
    merged, (report,) = techniques.apply(_steps("merge:0.125"), _ctx(net, (1, 2, 8, 8), ignore=("a",)))
    (layer,) = report["layers"]
    assert layer["merged"] and "any scale" in layer["exactness"]
    assert sorted(layer["consumers"]) == ["a", "head"]
    (m,) = layer["merges"]
    assert {m["channel"], m["into"]} == {2, 5} and m["scale"] == pytest.approx(-0.5 if m["channel"] == 5 else -2.0)
    assert merged.stem.out_channels == merged.b.out_channels == merged.a.in_channels == merged.head.in_channels == 7
    assert torch.allclose(_out(merged, X), _out(net, X), rtol=1e-5, atol=1e-5)


def test_a_negative_copy_through_relu_is_never_merged_with_a_negative_scale():
    net = _pair_net(nn.ReLU())
    _make_copy(net[0], net[1], src=1, dst=4, z=-2.5)
    _, (report,) = techniques.apply(_steps("merge:0.5"), _ctx(net, (1, 2, 8, 8), ignore=("3",)))
    (layer,) = report["layers"]
    assert layer["merged"] and layer["merges"]
    assert all(m["scale"] > 0 and m["similarity"] > 0 for m in layer["merges"])


def test_relu6_is_bounded_and_says_so():
    net = _pair_net(nn.ReLU6())
    _make_copy(net[0], net[1], src=1, dst=4, z=2.5)
    merged, (report,) = techniques.apply(_steps("merge:0.16"), _ctx(net, (1, 2, 8, 8), ignore=("3",)))
    (layer,) = report["layers"]
    assert layer["merged"] and layer["exactness"].startswith("bounded: clipping at 6")
    assert "ReLU6 [0, 6]" in layer["between"]
    (m,) = layer["merges"]
    assert "at most 9" in layer["exactness"] or "at most 3.6" in layer["exactness"]  # 6 * |1 - 2.5| or 6 * |1 - 0.4|
    # where nothing clips, the merge is exact: small inputs keep every activation below 6 / 2.5
    small = X * 1e-3
    assert torch.allclose(_out(merged, small), _out(net, small), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- falling back to pruning


@pytest.mark.parametrize("activation,op", [(nn.Sigmoid(), "Sigmoid"), (nn.GELU(), "Gelu")])
def test_a_non_homogeneous_activation_falls_back_to_pruning_and_says_why(activation, op):
    net = _pair_net(activation)
    _make_copy(net[0], net[1], src=1, dst=4, z=2.5)
    ctx = _ctx(net, (1, 2, 8, 8), ignore=("3",))
    merged, (report,) = techniques.apply(_steps("merge:0.5,criterion=l2"), ctx)
    (layer,) = report["layers"]
    assert not layer["merged"] and "merges" not in layer
    assert op in layer["fell_back_to_pruning"] and "not positively homogeneous" in layer["fell_back_to_pruning"]
    assert report["fell_back"] == [{"layer": "0", "reason": layer["fell_back_to_pruning"]}]
    assert report["merged_layers"] == []
    pruned, _ = techniques.apply(_steps("prune:0.5,epochs=0"), ctx)
    assert torch.equal(_out(merged, X), _out(pruned, X)), "the fallback is exactly prune with the same ratio"
    assert layer["compensation_error"] == pytest.approx(layer["error_if_pruned"])


def test_a_depthwise_convolution_between_the_pair_falls_back():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=4),
                        nn.ReLU(), nn.Conv2d(4, 6, 1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 64, 3)).eval()
    _, (report,) = techniques.apply(_steps("merge:0.5"), _ctx(net, (1, 2, 8, 8)))
    by_layer = {r["layer"]: r for r in report["layers"]}
    fell = [r for r in report["layers"] if not r["merged"]]
    assert fell and all("depthwise convolution (3, 4 groups)" in r["fell_back_to_pruning"] for r in fell)
    assert by_layer["5"]["merged"], "the pair after the depthwise conv merges as usual"


# --------------------------------------------------------------------------- the bundled example


@pytest.fixture
def ctx(built):
    base, _ = built
    return dataclasses.replace(base, techniques=TechniqueSettings(epochs=2, lr=2e-3))


def _consumer_output(model, name: str, calls) -> list[torch.Tensor]:
    seen = []
    hook = dict(model.named_modules())[name].register_forward_hook(lambda _m, _a, out: seen.append(out.detach()))
    with torch.no_grad():
        for args in calls:
            model(*args)
    hook.remove()
    return seen


def _rel_l2(a: list, b: list) -> float:
    num = sum(float(((x - y).double() ** 2).sum()) for x, y in zip(a, b))
    return math.sqrt(num / sum(float((y.double() ** 2).sum()) for y in b))


def test_recorded_compensation_error_matches_an_independent_computation(ctx):
    """Only the pair 0 -> 3 changes, so the network's own layer-3 output, merged against original,
    is the pair's error; and the original with the removed inputs of layer 3 zeroed is pruning's."""
    ctx = dataclasses.replace(ctx, techniques=dataclasses.replace(ctx.techniques, ignore=("3", "8")))
    merged, (report,) = techniques.apply(_steps("merge:0.3"), ctx)
    (layer,) = report["layers"]
    assert layer["layer"] == "0" and layer["merged"] and len(layer["merges"]) + len(layer["pruned_without_match"]) == 5
    calls = [(torch.from_numpy(ctx.calibration.inputs["input"][i:i + 1]),) for i in range(neuron_merge.ERROR_SAMPLES)]
    original = _consumer_output(ctx.model, "3", calls)
    assert layer["compensation_error"] == pytest.approx(_rel_l2(_consumer_output(merged, "3", calls), original),
                                                        rel=1e-4)
    import copy

    zeroed = copy.deepcopy(ctx.model)
    removed = [m["channel"] for m in layer["merges"]] + layer["pruned_without_match"]
    with torch.no_grad():
        zeroed[3].weight[:, removed] = 0
    assert layer["error_if_pruned"] == pytest.approx(_rel_l2(_consumer_output(zeroed, "3", calls), original), rel=1e-4)
    assert layer["compensation_error"] < layer["error_if_pruned"]


def test_merging_keeps_more_accuracy_than_pruning_the_same_channels(ctx):
    original = accuracy(ctx.model, ctx)
    pruned, _ = techniques.apply(_steps("prune:0.3,epochs=0"), ctx)
    same, (same_report,) = techniques.apply(_steps("merge:0.3,criterion=l2"), ctx)
    best, (report,) = techniques.apply(_steps("merge:0.3"), ctx)
    assert report["criterion"] == "cosine" and report["options"]["epochs"] == 0
    assert report["after"]["params"] == same_report["after"]["params"]
    assert report["fine_tuning"].startswith("none")
    acc_pruned, acc_same, acc_best = accuracy(pruned, ctx), accuracy(same, ctx), accuracy(best, ctx)
    assert acc_same > acc_pruned + 0.03, (acc_pruned, acc_same)
    assert acc_best > original - 0.03, (original, acc_best)
    for layer in report["layers"]:
        assert layer["merged"], layer
        assert layer["compensation_error"] <= layer["error_if_pruned"] + 0.01, layer


def test_merge_builds_and_exports_through_the_compressor(ctx, tmp_path):
    store = ArtifactStore(tmp_path)
    spec = dataclasses.replace(ctx.spec, training=None)  # merging needs no training data
    no_training = dataclasses.replace(ctx, spec=spec, training=None)
    for recipe in ("merge:0.3+onnx:fp32", "merge:0.3+torchscript:fp32", "merge:0.3+onnx:int8-static"):
        v, _ = build_variant(recipe, no_training, store)
        assert v.status == "ok", (recipe, v.error)
        assert v.metrics["accuracy"] > 0.95, (recipe, v.metrics)
        meta = json.loads((Path(v.path).parent / "variant.json").read_text())
        (step,) = meta["techniques"]
        assert step["technique"] == "merge" and step["after"]["params"] < step["before"]["params"]
        layer = step["layers"][0]
        assert {"layer", "merges", "compensation_error", "error_if_pruned", "exactness"} <= set(layer)
        assert {"channel", "into", "similarity", "scale"} == set(layer["merges"][0])
    v, _ = build_variant("merge:0.3,epochs=1+onnx:fp32", no_training, store)
    assert v.status == "failed" and "set [data] training" in v.error


def test_fine_tuning_after_merging_and_before_kd(ctx):
    _, (report,) = techniques.apply(_steps("merge:0.5,epochs=1"), ctx)
    assert report["fine_tuning"]["epochs"] == 1
    assert 0 < report["accuracy_before_fine_tuning"] <= 1
    model, reports = techniques.apply(_steps("merge:0.5,epochs=2+kd:epochs=1"), ctx)
    assert reports[0]["fine_tuning"] == "done by the kd step that follows"
    assert reports[1]["distilled"]["accuracy"] == accuracy(model, ctx)


# --------------------------------------------------------------------------- grammar


def test_merge_grammar_and_defaults():
    r = parse_recipe("merge:0.3, criterion=l2+onnx:int8-static")
    assert r.name == "merge:0.3,criterion=l2+onnx:int8-static" and parse_recipe(r.name) == r
    (step,) = r.techniques
    profile = TechniqueSettings(epochs=5, lr=0.01, ignore=("0",))
    opts = step.resolve(profile)
    assert opts["epochs"] == 0, "the profile's epochs do not make merge train"
    assert (opts["criterion"], opts["lr"], opts["ignore"]) == ("l2", 0.01, ["0"])
    assert parse_recipe("merge:0.3+onnx:fp32").techniques[0].resolve(profile)["criterion"] == "cosine"
    assert parse_recipe("merge:0.3,epochs=3+onnx:fp32").techniques[0].resolve(profile)["epochs"] == 3
    assert parse_recipe("merge:0.3+kd+onnx:fp32").techniques[1].name == "kd"
    for bad, words in (("merge+onnx:fp32", "needs its ratio"), ("merge:1+onnx:fp32", "between 0 and 1"),
                       ("merge:0.3,criterion=l1+onnx:fp32", "must be one of cosine, l2"),
                       ("merge:0.3,importance=l1+onnx:fp32", "no option 'importance'")):
        with pytest.raises(SpecError, match=words):
            parse_recipe(bad)


def test_merge_rejects_unknown_ignored_modules(ctx):
    bad = dataclasses.replace(ctx, techniques=TechniqueSettings(ignore=("nope",)))
    with pytest.raises(CompressError, match="ignore names 'nope'"):
        techniques.apply(_steps("merge:0.3"), bad)
