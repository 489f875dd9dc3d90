"""Bundled example models: real data shipped inside a wheel, trained on first use, cached."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from ..spec import InputSpec, ModelSpec


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_CACHE", Path.home() / ".cache" / "edgekit"))


def cached_weights(name: str, network: Callable, train: Callable):
    """`network()` with the cached weights `name`, or `train()` now and cache its weights.

    A truncated or stale cache file means training again; the new file lands by rename so
    concurrent first uses never read half a file.
    """
    import torch

    path = cache_dir() / f"{name}.pt"
    net = network()
    if path.is_file():
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return net.eval()
        except Exception:
            pass
    net = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, path)
    return net.eval()


def example_spec(module: str, name: str, shape: tuple[int, ...], source: str) -> ModelSpec:
    """The spec of a bundled example: its module provides build/calibration/evaluation/training."""
    return ModelSpec(
        name=name,
        inputs=(InputSpec("input", shape, "float32"),),
        factory=f"{module}:build",
        calibration=f"{module}:calibration",
        evaluation=f"{module}:evaluation",
        training=f"{module}:training",
        source=source,
    )
