"""Torch models shaped like the ones users bring, built and seeded in the test process.

None of them is a small classifier with one output, which is the one case a tool tuned on its
own example gets right by accident:

- `Detector`: a face-detector-like net with three heads per anchor (box regression [1, A, 4],
  class scores [1, A, 2] after softmax, landmarks [1, A, 10]), as RetinaFace/BlazeFace exports
  are laid out; the first output is a regression, so an argmax over it means nothing.
- `Embedder`: an image embedder ending in an L2-normalised 64-d vector (a MobileNetV2 used as a
  feature extractor); its output is [1, 64] like a classifier's, but it has no classes.
- `DynamicConv`: a fully convolutional net (a text detector's shape) exported with dynamic
  height and width, whose cost grows with the image size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SEED = 0
ANCHORS_PER_CELL = 2


def _seeded():
    import torch

    torch.manual_seed(SEED)
    return torch


def detector():
    torch = _seeded()
    from torch import nn

    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
            self.boxes = nn.Conv2d(32, ANCHORS_PER_CELL * 4, 1)
            self.scores = nn.Conv2d(32, ANCHORS_PER_CELL * 2, 1)
            self.landmarks = nn.Conv2d(32, ANCHORS_PER_CELL * 10, 1)

        @staticmethod
        def _per_anchor(x, k: int):
            n = x.shape[0]
            return x.permute(0, 2, 3, 1).reshape(n, -1, k)

        def forward(self, x):
            f = self.body(x)
            boxes = self._per_anchor(self.boxes(f), 4)
            scores = torch.softmax(self._per_anchor(self.scores(f), 2), dim=-1)
            return boxes, scores, self._per_anchor(self.landmarks(f), 10)

    return Detector().eval()


def embedder():
    torch = _seeded()
    from torch import nn

    class Embedder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 64))

        def forward(self, x):
            return torch.nn.functional.normalize(self.body(x), dim=1)

    return Embedder().eval()


def dynamic_conv_onnx(path: Path) -> Path:
    """A fully convolutional net exported with dynamic H and W (dim names `height`, `width`)."""
    torch = _seeded()
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(16, 1, 1), nn.Sigmoid()).eval()
    import contextlib
    import io
    import warnings

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(path), input_names=["image"],
                          output_names=["prob_map"], dynamo=False, opset_version=17,
                          dynamic_axes={"image": {2: "height", 3: "width"}, "prob_map": {2: "height", 3: "width"}})
    return Path(path)


def photos(n: int, size: int, seed: int = 0) -> np.ndarray:
    """`n` crops of scikit-learn's two real photos, [n, 3, size, size] float32 in 0..1."""
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        img = images[i % len(images)]
        y = rng.integers(0, img.shape[0] - size)
        x = rng.integers(0, img.shape[1] - size)
        out[i] = img[y:y + size, x:x + size].transpose(2, 0, 1) / 255.0
    return out
