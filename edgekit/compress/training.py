"""The one training loop every technique shares: fine-tuning after pruning or clustering, and
distillation (Hinton's loss) with its no-teacher baseline trained the very same way.

Seeded and single-purpose, so two runs that differ only in the teacher differ only because of it:
the data order and every augmented batch come from generators seeded by `seed` alone.

Augmentation (`augment`, for image inputs N,C,H,W) draws a fresh small random transform of each
training image every time it is used. With a teacher it is what makes distillation work on a
small split: the teacher labels every transformed image, so the student matches the teacher on
many more distinct inputs than the split holds ("a good teacher is patient and consistent",
Beyer et al., CVPR 2022). Without a teacher the hard label of the original image is kept, as in
ordinary augmented training.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import CompressError
from ..model import Dataset, load_data
from ..settings import AUGMENTS, SCHEDULES


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


SHIFT = 1 / 14  # "shift": whole-pixel translations up to this share of the side (2 px at 28x28, 1 at 8x8)
ROTATE_DEG, SCALE = 10.0, 0.1  # "affine": also rotation up to +-10 degrees and scale 0.9..1.1


def shift_px(h: int, w: int) -> int:
    return max(1, round(min(h, w) * SHIFT))


def options(opts: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `fit` that a step's resolved options set."""
    return {"augment": opts.get("augment", "none"), "schedule": opts.get("schedule", "constant")}


def check_augment(augment: str, spec) -> None:
    if augment not in AUGMENTS:
        raise CompressError(f"augment={augment!r} is not known. Fix: use one of {', '.join(AUGMENTS)}")
    if augment != "none":
        bad = [i for i in spec.inputs if len(i.shape) != 4]
        if bad:
            raise CompressError(f"augment={augment} transforms images (N,C,H,W); input {bad[0].name!r} has shape "
                                f"{list(bad[0].shape)}. Fix: augment=none")


def augment_batch(x, augment: str, gen):
    """A random small transform of every image in `x` (N,C,H,W), drawn from `gen`; `x` itself is kept."""
    import math

    import torch
    import torch.nn.functional as F

    if augment == "none":
        return x
    n, _, h, w = x.shape
    if augment == "shift":
        p = shift_px(h, w)
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * p)
        out = padded.gather(2, rows)
        cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, x.shape[1], h, w)
        return out.gather(3, cols)
    # affine: rotation, isotropic scale and a sub-pixel translation, bilinear, zero fill
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(ROTATE_DEG)
    scale = 1 + (torch.rand(n, generator=gen) * 2 - 1) * SCALE
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * shift_px(h, w) * 2 / torch.tensor([w, h])
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _tensors(data: Dataset, spec) -> tuple[list, Any]:
    import torch

    xs = [torch.from_numpy(np.ascontiguousarray(data.inputs[i.name])) for i in spec.inputs]
    return xs, torch.from_numpy(np.asarray(data.labels).astype(np.int64))


def fit(model, ctx, epochs: int, lr: float, batch_size: int, seed: int, teacher=None,
        temperature: float = 4.0, alpha: float = 0.9,
        after_step: Callable[[], None] | None = None, augment: str = "none",
        schedule: str = "constant") -> dict[str, Any]:
    """Train `model` in place with Adam; with a teacher, loss = alpha * T^2 * KL(soft) + (1-alpha) * CE.

    `augment` transforms every batch (see AUGMENTS; the teacher sees the same transformed batch);
    `schedule` "cosine" anneals the learning rate to 0 over the epochs, "constant" keeps it.

    `after_step` runs after every optimizer step (re-apply a sparsity mask, re-share clusters).
    Returns the mean loss of each epoch.
    """
    import torch
    import torch.nn.functional as F

    check_augment(augment, ctx.spec)
    if schedule not in SCHEDULES:
        raise CompressError(f"schedule={schedule!r} is not known. Fix: use one of {', '.join(SCHEDULES)}")
    data = training_data(ctx)
    xs, ys = _tensors(data, ctx.spec)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 7919)  # its own stream: the data order does not depend on it
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1)) if schedule == "cosine" else None
    if teacher is not None:
        teacher.eval()
    losses = []
    model.train()
    for _ in range(epochs):
        total, seen = 0.0, 0
        for idx in torch.randperm(len(ys), generator=gen).split(batch_size):
            if len(idx) < 2:  # BatchNorm cannot train on one sample
                continue
            batch = [augment_batch(x[idx], augment, aug_gen) for x in xs]
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
        if sched is not None:
            sched.step()
    model.eval()
    return {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "epoch_losses": losses,
            "samples": len(ys), "augment": augment, "schedule": schedule}


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
