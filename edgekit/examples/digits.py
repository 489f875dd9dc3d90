"""A small CNN for scikit-learn's `load_digits` (1797 real 8x8 handwritten digits).

It is edgekit's default model, so `edgekit deploy --target local` works on a fresh machine with
no download: the data ships in scikit-learn's wheel and training takes seconds. Weights are
cached so every later command reuses the same model.
"""

from __future__ import annotations


import numpy as np

from ..settings import ModelSpec
from . import cached_splits, cached_weights, example_spec

NAME = "digits-cnn"
VERSION = 1  # bump when the architecture, splits or training change: it keys the weight and data caches
WEIGHTS = f"{NAME}-v{VERSION}"  # the cached weights file's name (also the spec's checkpoint once trained)
SEED = 0
EVAL_SIZE = 500
CALIBRATION_SIZE = 128


def _splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return cached_splits(f"{NAME}-v{VERSION}-data", _make_splits)


def _make_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[order], y[order]
    return {
        "evaluation": (x[:EVAL_SIZE], y[:EVAL_SIZE]),
        "training": (x[EVAL_SIZE:], y[EVAL_SIZE:]),
        "calibration": (x[EVAL_SIZE:EVAL_SIZE + CALIBRATION_SIZE], y[EVAL_SIZE:EVAL_SIZE + CALIBRATION_SIZE]),
    }


def calibration() -> np.ndarray:
    """Inputs for int8 calibration, drawn from the training split."""
    return _splits()["calibration"][0]


def evaluation() -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) never seen in training: accuracy is measured here."""
    return _splits()["evaluation"]


def training() -> tuple[np.ndarray, np.ndarray]:
    return _splits()["training"]


def _network():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def _train(epochs: int = 20):
    import torch

    torch.manual_seed(SEED)
    net = _network()
    x, y = training()
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xs), generator=gen).split(64):
            opt.zero_grad()
            loss_fn(net(xs[idx]), ys[idx]).backward()
            opt.step()
    return net.eval()


def build():
    """The trained network (eval mode): from the cache, or trained now and cached."""
    return cached_weights(WEIGHTS, _network, _train)


def spec() -> ModelSpec:
    return example_spec(__name__, NAME, (1, 1, 8, 8), "built-in example (scikit-learn digits)", WEIGHTS)
