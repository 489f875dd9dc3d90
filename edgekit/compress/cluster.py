"""Weight sharing: k-means per layer to N shared values (a codebook plus an index per weight).

Centroid fine-tuning keeps the sharing exact: after every optimizer step each cluster's weights
are replaced by their mean, which for SGD is the centroid moving by the mean of its weights'
gradients. The exported file still stores fp32 values, but only N distinct ones per layer, so a
compressor (gzip, zstd) or a palettizing runtime shrinks it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .netstats import distinct_values, weight_layers
from .training import fit, options as train_options

MAX_FIT_SAMPLES = 20000  # k-means on a subsample; every weight is then assigned to its nearest centroid


def kmeans_1d(values: np.ndarray, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, index per value): scikit-learn's KMeans with linear initialisation over the range."""
    from sklearn.cluster import KMeans

    flat = values.reshape(-1, 1).astype(np.float64)
    k = min(clusters, int(np.unique(flat).size))
    rng = np.random.default_rng(seed)
    sample = flat if len(flat) <= MAX_FIT_SAMPLES else flat[rng.choice(len(flat), MAX_FIT_SAMPLES, replace=False)]
    init = np.linspace(flat.min(), flat.max(), k).reshape(-1, 1)  # density-agnostic: keeps large weights
    km = KMeans(n_clusters=k, init=init, n_init=1, random_state=seed).fit(sample)
    centroids = km.cluster_centers_.reshape(-1)
    index = np.abs(flat - centroids.reshape(1, -1)).argmin(axis=1)
    return centroids.astype(np.float32), index.reshape(values.shape)


def fold_batchnorm(model) -> tuple[Any, str]:
    """Conv+BatchNorm folded into one conv (torch.fx), so the exporter's own folding, which scales
    every output channel differently, cannot multiply the shared values after clustering."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model.eval()), "folded into the preceding convolutions"
    except Exception as exc:  # untraceable model: cluster as is, and say what the exporter may do
        return model, (f"not folded ({type(exc).__name__}); an exporter that folds BatchNorm multiplies the "
                       f"distinct values per layer by up to the channel count")


def apply(model, opts: dict[str, Any], ctx) -> tuple[Any, dict[str, Any]]:
    import torch

    model, batchnorm = fold_batchnorm(model)
    layers = weight_layers(model)
    indices = {}
    for name, layer in layers.items():
        w = layer.weight.detach().numpy()
        centroids, index = kmeans_1d(w, opts["clusters"], opts["seed"])
        layer.weight.data.copy_(torch.from_numpy(centroids[index]))
        indices[name] = (torch.from_numpy(index.reshape(-1)), len(centroids))

    def reshare() -> None:
        for name, (index, k) in indices.items():
            w = layers[name].weight.data
            flat = w.reshape(-1)
            sums = torch.zeros(k, dtype=w.dtype).index_add_(0, index, flat)
            counts = torch.zeros(k, dtype=w.dtype).index_add_(0, index, torch.ones_like(flat))
            flat.copy_((sums / counts.clamp(min=1))[index])

    training = fit(model, ctx, opts["epochs"], opts["lr"], opts["batch_size"], opts["seed"],
                   after_step=reshare, **train_options(opts)) if opts["epochs"] else None
    with torch.no_grad():
        reshare()
    return model, {"batchnorm": batchnorm, "distinct_values": distinct_values(model), "codebook_bits": int(np.ceil(np.log2(opts["clusters"]))),
                   "centroid_fine_tuning": training}
