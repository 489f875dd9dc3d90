"""Structured pruning that physically removes channels (torch-pruning's DependencyGraph), then
fine-tuning on the user's training data: pruning alone can wreck accuracy.

The classifier head (the last Conv/Linear to run) is always left alone so the outputs keep their
meaning; `[techniques] ignore` names more modules to keep.
"""

from __future__ import annotations

from typing import Any

from ..errors import CompressError
from ..model import example_inputs
from .netstats import channels, weight_layers
from .training import fit, options as train_options, training_data

TAYLOR_BATCHES = 8


def head_layer(model, args) -> str:
    """Name of the last Conv/Linear to run in a forward pass: the classifier head."""
    import torch

    order: list[str] = []
    hooks = [m.register_forward_hook(lambda *_, n=n: order.append(n)) for n, m in weight_layers(model).items()]
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise CompressError("pruning found no Conv/Linear layer to prune")
    return order[-1]


def _importance(name: str):
    import torch_pruning as tp

    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if name == "l1" else 2)


def _taylor_gradients(model, ctx, batch_size: int) -> None:
    """Accumulate loss gradients on a few training batches: Taylor importance reads them."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    data = training_data(ctx)
    xs = [torch.from_numpy(np.ascontiguousarray(data.inputs[i.name])) for i in ctx.spec.inputs]
    ys = torch.from_numpy(np.asarray(data.labels).astype(np.int64))
    model.eval()  # statistics of BatchNorm must not move while scoring
    model.zero_grad()
    for start in range(0, min(len(ys), TAYLOR_BATCHES * batch_size), batch_size):
        sl = slice(start, start + batch_size)
        F.cross_entropy(model(*[x[sl] for x in xs]), ys[sl]).backward()


def apply(model, opts: dict[str, Any], ctx, fine_tune: bool = True) -> tuple[Any, dict[str, Any]]:
    import torch
    import torch_pruning as tp

    args = tuple(torch.from_numpy(v) for v in example_inputs(ctx.spec).values())
    modules = dict(model.named_modules())
    missing = [n for n in opts["ignore"] if n not in modules]
    if missing:
        raise CompressError(f"[techniques] ignore names {missing[0]!r}, which the model lacks. "
                            f"Fix: use module names such as {', '.join(list(weight_layers(model))[:4])}")
    head = head_layer(model, args)
    ignored = [modules[head], *(modules[n] for n in opts["ignore"])]
    before = channels(model)
    iterations = opts["iterations"]
    try:
        pruner = tp.pruner.MetaPruner(model, args[0] if len(args) == 1 else args,
                                      importance=_importance(opts["importance"]),
                                      pruning_ratio=opts["ratio"], iterative_steps=iterations,
                                      ignored_layers=ignored)
    except Exception as exc:
        raise CompressError(f"torch-pruning cannot trace the model: {' '.join(str(exc).split())[:200]}") from None
    epochs = opts["epochs"] if fine_tune else 0
    per_round = [epochs // iterations + (1 if i < epochs % iterations else 0) for i in range(iterations)]
    training = []
    for i in range(iterations):
        if opts["importance"] == "taylor":
            _taylor_gradients(model, ctx, opts["batch_size"])
        pruner.step()
        model.zero_grad(set_to_none=True)
        if per_round[i]:
            training.append(fit(model, ctx, per_round[i], opts["lr"], opts["batch_size"], opts["seed"] + i,
                                **train_options(opts)))
    model.eval()
    after = channels(model)
    return model, {
        "head": head,
        "ignored": [head, *opts["ignore"]],
        "channels_before": before,
        "channels_after": after,
        "fine_tuning": training if fine_tune else "done by the kd step that follows",
        "schedule": "one-shot" if iterations == 1 else f"iterative, {iterations} rounds",
    }
