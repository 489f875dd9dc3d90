"""The one training loop every technique shares: fine-tuning after pruning or clustering, and
distillation (Hinton's loss) with its no-teacher baseline trained the very same way.

Seeded and single-purpose, so two runs that differ only in the teacher differ only because of it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import CompressError
from ..model import Dataset, load_data


def training_data(ctx) -> Dataset:
    """The user's `[data] training` split with labels, loaded once per compress run."""
    if ctx.training is None:
        if not ctx.spec.training:
            raise CompressError("needs training data for fine-tuning: set [data] training in the model spec "
                                "(a module:function returning (inputs, labels)), or set epochs=0")
        ctx.training = load_data(ctx.spec.training, ctx.spec, "training")
    if ctx.training.labels is None:
        raise CompressError("[data] training has no labels; fine-tuning needs them. "
                            "Fix: return (inputs, labels) from it")
    return ctx.training


def _tensors(data: Dataset, spec) -> tuple[list, Any]:
    import torch

    xs = [torch.from_numpy(np.ascontiguousarray(data.inputs[i.name])) for i in spec.inputs]
    return xs, torch.from_numpy(np.asarray(data.labels).astype(np.int64))


def fit(model, ctx, epochs: int, lr: float, batch_size: int, seed: int, teacher=None,
        temperature: float = 4.0, alpha: float = 0.9,
        after_step: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train `model` in place with Adam; with a teacher, loss = alpha * T^2 * KL(soft) + (1-alpha) * CE.

    `after_step` runs after every optimizer step (re-apply a sparsity mask, re-share clusters).
    Returns the mean loss of each epoch.
    """
    import torch
    import torch.nn.functional as F

    data = training_data(ctx)
    xs, ys = _tensors(data, ctx.spec)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    if teacher is not None:
        teacher.eval()
    losses = []
    model.train()
    for _ in range(epochs):
        total, seen = 0.0, 0
        for idx in torch.randperm(len(ys), generator=gen).split(batch_size):
            if len(idx) < 2:  # BatchNorm cannot train on one sample
                continue
            batch = [x[idx] for x in xs]
            logits = model(*batch)
            loss = F.cross_entropy(logits, ys[idx])
            if teacher is not None:
                with torch.no_grad():
                    soft = teacher(*batch)
                kl = F.kl_div(F.log_softmax(logits / temperature, dim=1), F.softmax(soft / temperature, dim=1),
                              reduction="batchmean") * temperature ** 2
                loss = alpha * kl + (1.0 - alpha) * loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after_step is not None:
                with torch.no_grad():
                    after_step()
            total += loss.item() * len(idx)
            seen += len(idx)
        losses.append(total / max(seen, 1))
    model.eval()
    return {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "epoch_losses": losses,
            "samples": len(ys)}


def accuracy(model, ctx) -> float | None:
    """Top-1 accuracy of a torch model on the evaluation split (reported, never trained on)."""
    import torch

    data = ctx.evaluation
    if data is None or data.labels is None:
        return None
    xs, ys = _tensors(data, ctx.spec)
    model.eval()
    with torch.no_grad():
        preds = torch.cat([model(*[x[i:i + 256] for x in xs]).argmax(1) for i in range(0, len(ys), 256)])
    return float((preds == ys).float().mean())
