"""Neuron merging: remove channels like structured pruning, but fold each removed channel into the
kept channel it is a scaled copy of, so the next layer still receives (most of) its contribution
without any data or training (Kim et al., "Neuron Merging: Compensating for Pruned Neurons",
NeurIPS 2020).

If the removed channel j's pre-activation is z times kept channel k's and everything between the
pair is positively homogeneous (ReLU, max-pooling: f(z*x) = z*f(x) for z > 0), then channel j's
output is z times channel k's, and adding z * W_next[:, j] to W_next[:, k] before deleting j
leaves the next layer's output unchanged. BatchNorm right after the producing layer is a per-
channel affine map, so the similarity is taken on the BatchNorm-folded filter and bias (the
layer that actually runs once `fold_bn` merges the pair before export): then the shift is scaled
with the channel and the merge stays exact. Between a pair joined only by linear ops (a residual
stream: BatchNorm, add, average pooling, no activation) any sign of z is exact. ReLU6 / clamp is
bounded: off by at most max(|clip|) * |1 - z| per element where an activation clips.

Anything else between the pair (sigmoid, GELU, SiLU, a depthwise convolution that filters every
channel with its own kernel, a BatchNorm not right after the producer, a grouped consumer, a
model output) makes the merge neither exact nor bounded: that layer falls back to plain pruning
of the same channels, and the report says why.

Channels are chosen, grouped and removed through torch-pruning's DependencyGraph, exactly as
`prune` does, so residual streams and concatenations stay consistent: the compensation is
applied to every consumer in the pruning group before `group.prune()`. Matching uses cosine
similarity as in the paper; the scale is the least-squares one, z = <v_j, v_k> / |v_k|^2 (the
paper's norm ratio times the cosine), so a merge never leaves more weight-space error than
dropping the channel (|v_j - z v_k| = |v_j| sin(angle) <= |v_j|) and no similarity threshold is
needed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import CompressError
from ..model import batches, example_inputs
from .netstats import channels, weight_layers
from .prune import head_layer
from .registry import MERGE_CRITERIA as CRITERIA
from .training import accuracy, fit, options as train_options, training_data

ERROR_SAMPLES = 8  # calibration samples the per-layer compensation error is measured on

# autograd op names (grad_fn without "Backward<N>") by what they do to a per-channel scale z
POSITIVE = {"Relu", "LeakyRelu", "MaxPool1DWithIndices", "MaxPool2DWithIndices", "MaxPool3DWithIndices",
            "AdaptiveMaxPool1D", "AdaptiveMaxPool2D", "AdaptiveMaxPool3D", "MaxPool2D", "MaxPool3D"}
LINEAR = {"Add", "Sub", "AvgPool2D", "AvgPool3D", "AdaptiveAvgPool2D", "AdaptiveAvgPool3D", "Mean", "Sum",
          "View", "Reshape", "UnsafeView", "Clone", "Cat", "Permute", "Transpose", "Squeeze", "Unsqueeze",
          "Expand", "Slice", "Split", "SplitWithSizes", "Neg", "UpsampleNearest1D", "UpsampleNearest2D",
          "UpsampleNearest3D", "UpsampleBilinear2D", "UpsampleLinear1D", "UpsampleTrilinear3D",
          "UpsampleNearestExact2D"}
CLIPPING = {"Hardtanh", "Clamp"}


@dataclass
class Pair:
    """What lies between a group's producers and consumers, and whether a merge is exact there."""

    producers: list = field(default_factory=list)  # (name, module, rows by root channel, bn or None)
    consumers: list = field(default_factory=list)  # (name, module, {root channel: [input idxs]})
    path: list[str] = field(default_factory=list)  # the ops in between, in words
    mode: str | None = "linear"  # linear (any z) | positive (z > 0, exact) | clipped (z > 0, bounded) | None
    clip: float = 0.0  # largest |clip value| on a clipped path
    reason: str = ""  # why a merge is not exact here (mode None)

    def refuse(self, reason: str) -> None:
        if self.mode is not None:
            self.mode, self.reason = None, reason


def _op_name(node) -> str:
    grad_fn = getattr(node, "grad_fn", None)
    name = grad_fn.name() if grad_fn is not None and hasattr(grad_fn, "name") else str(node.name)
    return re.sub(r"Backward\d*$", "", name)


def _clip_range(node) -> tuple[float | None, float | None]:
    g = node.grad_fn
    lo = getattr(g, "_saved_min_val", getattr(g, "_saved_min", None))
    hi = getattr(g, "_saved_max_val", getattr(g, "_saved_max", None))
    as_float = (lambda v: None if v is None else float(v.item() if hasattr(v, "item") else v))
    return as_float(lo), as_float(hi)


def _by_root(item) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for idx, root in zip(item.idxs, item.root_idxs):
        out.setdefault(int(root), []).append(int(idx))
    return out


def analyse(group, names: dict) -> Pair:
    """Classify every member of a (full) torch-pruning group: producers, consumers, the ops between."""
    import torch_pruning as tp
    from torch import nn

    dg = group._DG
    pair = Pair()
    bns = []
    for item in group.items:
        node, handler = item.dep.target, item.dep.handler
        module = node.module
        name = names.get(module) or _op_name(node)
        out = dg.is_out_channel_pruning_fn(handler)
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            if isinstance(module, nn.modules.conv._ConvTransposeNd):
                pair.refuse(f"{type(module).__name__} {name}: transposed convolutions are not handled")
            elif getattr(module, "groups", 1) != 1:
                kind = "depthwise" if module.groups == module.out_channels else "grouped"
                pair.refuse(f"a {kind} convolution ({name}, {module.groups} groups) lies between the pair: it "
                            f"filters each channel with its own kernel, so a merged channel's output is not a scaled "
                            f"copy of the one it merges into")
            elif out:
                rows = _by_root(item)
                if any(len(v) != 1 for v in rows.values()):
                    pair.refuse(f"{name}: one channel maps to several output rows")
                pair.producers.append([name, module, {r: v[0] for r, v in rows.items()}, None])
            else:
                pair.consumers.append((name, module, _by_root(item)))
            continue
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            bns.append((item, node, name))
            continue
        kind = node.type
        if kind == tp.ops.OPTYPE.ELEMENTWISE:
            op = _op_name(node)
            if not node.inputs and op in ("T", "Transpose", "Permute", "View"):
                continue  # a transposed weight feeding a Linear, not on the activation path
            _classify(pair, node, op)
        elif kind in (tp.ops.OPTYPE.RESHAPE, tp.ops.OPTYPE.CONCAT, tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.SLICE,
                      tp.ops.OPTYPE.UNBIND, tp.ops.OPTYPE.EXPAND):
            pair.path.append(kind.name.lower())
        elif kind == tp.ops.OPTYPE.OUTPUT:
            pair.refuse("the channels reach a model output, which has no next layer to compensate")
        else:
            pair.refuse(f"{type(module).__name__} {name} ({kind.name}) lies between the pair: a per-channel "
                        f"operation that merging cannot carry through")
    producer_nodes = {p[1]: p for p in pair.producers}
    for item, node, name in bns:
        sources = [n for n in node.inputs if n.module in producer_nodes]
        if len(node.inputs) != 1 or not sources or len(sources[0].outputs) != 1:
            pair.refuse(f"BatchNorm {name} is not right after the layer that produces the channels: its shift is "
                        f"not scaled with the channel, so the merge would be off by a constant")
            continue
        bn = node.module
        if not bn.track_running_stats or bn.running_mean is None:
            pair.refuse(f"BatchNorm {name} has no running statistics, so it is not a fixed affine map")
            continue
        producer = producer_nodes[sources[0].module]
        producer[3] = (bn, {r: v[0] for r, v in _by_root(item).items()})
        pair.path.append(f"BatchNorm {name} (folded into {producer[0]})")
    n = len(group.items[0].idxs)
    for name, _, rows, bn in pair.producers:
        if set(rows) != set(range(n)) or (bn is not None and set(bn[1]) != set(range(n))):
            pair.refuse(f"{name} produces only some of these channels (a concatenation): no single filter per channel")
    if not pair.producers:
        pair.refuse("no convolution or linear layer produces these channels")
    if not pair.consumers and pair.mode is not None:
        pair.refuse("no convolution or linear layer consumes these channels")
    return pair


def _classify(pair: Pair, node, op: str) -> None:
    if op in POSITIVE:
        pair.path.append(op)
        if pair.mode == "linear":
            pair.mode = "positive"
    elif op in LINEAR:
        if op in ("Add", "Sub") and len(node.inputs) < 2:
            pair.refuse(f"{op.lower()} of a constant lies between the pair: f(z*x) != z*f(x)")
        pair.path.append(op)
    elif op in CLIPPING:
        lo, hi = _clip_range(node)
        if lo == 0 and hi is None:  # clamp(min=0) is ReLU
            pair.path.append(op)
            if pair.mode == "linear":
                pair.mode = "positive"
        elif lo is not None and hi is not None and lo <= 0 <= hi:
            pair.path.append(f"{'ReLU6' if (lo, hi) == (0.0, 6.0) else op} [{lo:g}, {hi:g}]")
            pair.clip = max(pair.clip, abs(lo), abs(hi))
            if pair.mode in ("linear", "positive"):
                pair.mode = "clipped"
        else:
            pair.refuse(f"{op.lower()} to [{lo}, {hi}] lies between the pair: f(0) != 0, not homogeneous")
    else:
        pair.refuse(f"{op} lies between the pair: it is not positively homogeneous (f(z*x) != z*f(x)), so a merged "
                    f"channel cannot be reproduced by scaling the kept one")


def vectors(pair: Pair, n: int):
    """Per root channel: every producer's BatchNorm-folded filter and bias, concatenated (float64)."""
    import torch

    parts = []
    for _name, module, rows, bn in pair.producers:
        order = [rows[r] for r in range(n)]
        w = module.weight.detach().double().reshape(module.weight.shape[0], -1)[order]
        b = (module.bias.detach().double()[order] if module.bias is not None
             else torch.zeros(n, dtype=torch.float64))
        if bn is not None:
            bn_module, bn_rows = bn
            idx = [bn_rows[r] for r in range(n)]
            var, mean = bn_module.running_var.detach().double()[idx], bn_module.running_mean.detach().double()[idx]
            gamma = bn_module.weight.detach().double()[idx] if bn_module.affine else torch.ones(n, dtype=torch.float64)
            beta = bn_module.bias.detach().double()[idx] if bn_module.affine else torch.zeros(n, dtype=torch.float64)
            a = gamma / torch.sqrt(var + bn_module.eps)
            w, b = a[:, None] * w, a * b + beta - a * mean
        parts += [w, b[:, None]]
    return torch.cat(parts, dim=1)


def similarity(v):
    """Cosine similarity matrix of the rows of v; 0 for a row of zeros."""
    import torch

    norm = v.norm(dim=1)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    u = v / safe[:, None]
    return u @ u.T


def match(v, removed: list[int], kept: list[int], mode: str) -> tuple[list[dict[str, Any]], list[int]]:
    """Each removed channel's most similar kept channel and its least-squares scale; the channels no
    kept channel can stand in for (all similarities <= 0 where the scale must be positive)."""
    sim = similarity(v)
    merges, unmatched = [], []
    for j in removed:
        row = sim[j, kept]
        score = row.abs() if mode == "linear" else row
        best = int(score.argmax())
        k = kept[best]
        if float(v[j].norm()) == 0.0:
            unmatched.append(j)  # a channel of zeros: dropping it is exact
            continue
        if float(score[best]) <= 0.0:
            unmatched.append(j)
            continue
        scale = float(v[j] @ v[k] / (v[k] @ v[k]))
        merges.append({"channel": j, "into": k, "similarity": round(float(row[best]), 6), "scale": scale})
    return merges, unmatched


class Importance:
    """torch-pruning importance: l2 = prune's (the same channels go); cosine = the channels a merge
    reproduces best go first (l2 importance times what the best kept match cannot reproduce)."""

    def __init__(self, criterion: str, names: dict):
        import torch_pruning as tp

        self.criterion, self.names = criterion, names
        self.l2 = tp.importance.GroupMagnitudeImportance(p=2)

    def __call__(self, group, **kwargs):
        import torch

        imp = self.l2(group, **kwargs)
        if self.criterion == "l2" or imp is None:
            return imp
        pair = analyse(group, self.names)
        n = len(group.items[0].idxs)
        if pair.mode is None or len(imp) != n:
            return imp  # falls back to pruning: keep prune's choice
        sim = similarity(vectors(pair, n))
        if pair.mode == "linear":
            sim = sim.abs()
        sim = sim.clamp(min=0).fill_diagonal_(-1.0)
        base = imp.detach().double().cpu()
        alive = torch.ones(n, dtype=torch.bool)
        best, arg = sim.max(dim=1)  # each channel's most similar channel still alive
        order = []
        for _ in range(n - 1):
            left = base * torch.sqrt(1 - best.clamp(0, 1) ** 2)  # what merging j cannot reproduce
            left[~alive] = math.inf
            j = int(left.argmin())
            order.append(j)
            alive[j] = False
            sim[:, j] = -1.0
            stale = alive & (arg == j)
            if stale.any():
                best[stale], arg[stale] = sim[stale].max(dim=1)
        order += [int(i) for i in torch.nonzero(alive).flatten()]
        scores = torch.empty(n, dtype=imp.dtype)
        scores[torch.tensor(order)] = torch.arange(n, dtype=imp.dtype)
        return scores.to(imp.device)


# --------------------------------------------------------------------------- compensation error


class _Enough(BaseException):
    """Raised from a hook once every consumer has run: the rest of the forward pass is not needed.
    A BaseException, so a model that catches Exception in its forward cannot swallow it."""


class _Capture:
    """The inputs and outputs of the given modules over the calibration calls, each forward pass
    stopped as soon as the last of them has run."""

    def __init__(self, modules: list):
        self.seen: dict[int, list] = {id(m): [] for m in modules}
        self.pending: set[int] = set()
        self.hooks = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, module, args, output):
        if args and hasattr(args[0], "detach") and id(module) in self.pending:
            self.seen[id(module)].append((args[0].detach().clone(), output.detach().clone()))
            self.pending.discard(id(module))
        if not self.pending:
            raise _Enough

    def run(self, model, calls: list[tuple]) -> None:
        import torch

        with torch.no_grad():
            for args in calls:
                self.pending = set(self.seen)
                try:
                    model(*args)
                except _Enough:
                    pass

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


def calibration_calls(ctx) -> list[tuple]:
    """Positional torch arguments for up to ERROR_SAMPLES calibration calls at the declared shapes."""
    import torch

    data = ctx.calibration
    if data is None or len(data) == 0:
        return []
    calls = []
    for feeds in batches(data.head(ERROR_SAMPLES * ctx.spec.batch_size), ctx.spec):
        calls.append(tuple(torch.from_numpy(feeds[i.name]) for i in ctx.spec.inputs))
    return calls[:ERROR_SAMPLES]


def pair_error(before: dict, consumers: list, removed_in: dict) -> dict[str, Any]:
    """Relative L2 of each consumer's output after the group changed against before, on the same
    inputs: the merged pair against the original pair (the rest of the network is the same)."""
    import torch

    num = den = 0.0
    per = {}
    with torch.no_grad():
        for name, module, _ in consumers:
            records = before.get(id(module), [])
            if not records:
                continue
            d = 1 if not hasattr(module, "in_features") else -1
            gone = set(removed_in[name])
            c_num = c_den = 0.0
            for x, y0 in records:
                keep = torch.tensor([i for i in range(x.shape[d]) if i not in gone])
                y1 = module(x.index_select(d, keep))
                c_num += float(((y1 - y0).double() ** 2).sum())
                c_den += float((y0.double() ** 2).sum())
            per[name] = math.sqrt(c_num / c_den) if c_den > 0 else 0.0
            num, den = num + c_num, den + c_den
    return {"relative_l2": math.sqrt(num / den) if den > 0 else None, "per_consumer": per}


def _zeroed_error(before: dict, originals: dict, consumers: list, removed_in: dict) -> float | None:
    """What plain pruning of the same channels would give: the original consumer, removed inputs zeroed."""
    import torch

    num = den = 0.0
    with torch.no_grad():
        for name, module, _ in consumers:
            for x, y0 in before.get(id(module), []):
                d = 1 if not hasattr(module, "in_features") else -1
                x = x.clone()
                x.index_fill_(d % x.dim(), torch.tensor(sorted(removed_in[name]), dtype=torch.long), 0.0)
                y = originals[name](x)
                num += float(((y - y0).double() ** 2).sum())
                den += float((y0.double() ** 2).sum())
    return math.sqrt(num / den) if den > 0 else None


# --------------------------------------------------------------------------- the step


def _removed_inputs(group, pair: Pair) -> dict[str, list[int]]:
    """Each consumer's input positions that `group.prune()` removes (the pruning group's own idxs)."""
    mine = {id(module): name for name, module, _ in pair.consumers}
    out = {name: [] for name in mine.values()}
    for item in group.items:
        name = mine.get(id(item.dep.target.module))
        if name is not None and not group._DG.is_out_channel_pruning_fn(item.dep.handler):
            out[name] = sorted(int(i) for i in item.idxs)
    return out


def _compensate(pair: Pair, merges: list[dict[str, Any]]) -> None:
    """W_next[:, into] += scale * W_next[:, channel] in every consumer, before the prune deletes `channel`."""
    import torch

    with torch.no_grad():
        for _name, module, by_root in pair.consumers:
            w = module.weight
            for m in merges:
                src, dst = by_root.get(m["channel"], []), by_root.get(m["into"], [])
                if len(src) != len(dst):
                    raise CompressError(f"neuron merging: {_name} maps channels {m['channel']} and {m['into']} to "
                                        f"inputs of different widths")
                if src:
                    w[:, dst] += m["scale"] * w[:, src]


def _bound_note(pair: Pair, merges: list[dict[str, Any]]) -> str:
    if pair.mode == "linear":
        return "exact for any scale: only linear ops between the pair"
    if pair.mode == "positive":
        return "exact for scale > 0: the ops between the pair are positively homogeneous"
    worst = max((abs(1 - m["scale"]) for m in merges), default=0.0)
    return (f"bounded: clipping at {pair.clip:g} makes a merged channel off by at most {pair.clip:g} * |1 - scale| "
            f"per element where an activation clips (at most {pair.clip * worst:.3g} here), exact elsewhere")


def merge_group(group, dg, names: dict, calls: list[tuple], model) -> dict[str, Any]:
    """Merge (or, where that is not exact or bounded, only prune) the channels a pruning group
    removes, and measure the consumers' output change on the calibration calls. The group is pruned."""
    import copy

    root, handler = group.items[0].dep.target.module, group.items[0].dep.handler
    n = dg.get_out_channels(root)
    pair = analyse(dg.get_pruning_group(root, handler, list(range(n))), names)
    removed = sorted(int(i) for i in group.items[0].idxs)
    kept = sorted(set(range(n)) - set(removed))
    merges, unmatched = match(vectors(pair, n), removed, kept, pair.mode) if pair.mode else ([], removed)
    removed_in = _removed_inputs(group, pair)
    capture = _Capture([c[1] for c in pair.consumers])
    try:
        if pair.consumers:
            capture.run(model, calls)
    finally:
        capture.close()
    originals = {name: copy.deepcopy(module) for name, module, _ in pair.consumers}
    _compensate(pair, merges)
    group.prune()
    record: dict[str, Any] = {"layer": names.get(root, str(root)), "consumers": [c[0] for c in pair.consumers],
                              "between": pair.path, "channels_before": n, "channels_after": len(kept)}
    if pair.mode is None:
        record.update({"merged": False, "fell_back_to_pruning": pair.reason})
    else:
        record.update({"merged": True, "exactness": _bound_note(pair, merges), "merges": merges,
                       "pruned_without_match": unmatched})
    error = pair_error(capture.seen, pair.consumers, removed_in) if calls else None
    record.update({
        "compensation_error": None if error is None else error["relative_l2"],
        "compensation_error_per_consumer": None if error is None else error["per_consumer"],
        "error_if_pruned": _zeroed_error(capture.seen, originals, pair.consumers, removed_in) if calls else None,
    })
    return record


def apply(model, opts: dict[str, Any], ctx, fine_tune: bool = True) -> tuple[Any, dict[str, Any]]:
    import torch
    import torch_pruning as tp

    criterion = opts.get("criterion", "cosine")
    if criterion not in CRITERIA:
        raise CompressError(f"merge criterion={criterion!r} is not known. Fix: use one of {', '.join(CRITERIA)}")
    args = tuple(torch.from_numpy(v) for v in example_inputs(ctx.spec).values())
    modules = dict(model.named_modules())
    missing = [n for n in opts.get("ignore", ()) if n not in modules]
    if missing:
        raise CompressError(f"[techniques] ignore names {missing[0]!r}, which the model lacks. "
                            f"Fix: use module names such as {', '.join(list(weight_layers(model))[:4])}")
    head = head_layer(model, args)
    ignored = [modules[head], *(modules[n] for n in opts.get("ignore", ()))]
    names = {m: n for n, m in modules.items()}
    before = channels(model)
    try:
        pruner = tp.pruner.MetaPruner(model, args[0] if len(args) == 1 else args,
                                      importance=Importance(criterion, names),
                                      pruning_ratio=opts["ratio"], iterative_steps=1, ignored_layers=ignored)
    except Exception as exc:
        raise CompressError(f"torch-pruning cannot trace the model: {' '.join(str(exc).split())[:200]}") from None
    calls = calibration_calls(ctx)
    model.eval()
    layers = [merge_group(group, pruner.DG, names, calls, model) for group in pruner.step(interactive=True)]
    model.zero_grad(set_to_none=True)
    model.eval()
    epochs = opts.get("epochs", 0)
    training: Any = "none (epochs=0): merging needs no data"
    accuracy_merged = None
    if epochs and fine_tune:
        training_data(ctx)  # fails with the fix before any work when there is none
        accuracy_merged = accuracy(model, ctx)
        training = fit(model, ctx, epochs, opts["lr"], opts["batch_size"], opts["seed"], **train_options(opts))
    elif epochs:
        training = "done by the kd step that follows"
    model.eval()
    return model, {
        "method": "neuron merging (Kim et al., NeurIPS 2020): cosine match on the BatchNorm-folded filter and "
                  "bias, least-squares scale folded into the consumers' weights",
        "criterion": criterion,
        "head": head,
        "ignored": [head, *opts.get("ignore", ())],
        "channels_before": before,
        "channels_after": channels(model),
        "layers": layers,
        "merged_layers": [r["layer"] for r in layers if r["merged"]],
        "fell_back": [{"layer": r["layer"], "reason": r["fell_back_to_pruning"]} for r in layers if not r["merged"]],
        "compensation_error_basis": (f"relative L2 of each consumer layer's output on {len(calls)} calibration "
                                     f"call(s): the pair after this layer's merge against the pair before it"
                                     if calls else "not measured: no [data] calibration"),
        "fine_tuning": training,
        "accuracy_before_fine_tuning": accuracy_merged,
    }
