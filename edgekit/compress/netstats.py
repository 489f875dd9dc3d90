"""Size figures of a torch model: parameters, MACs (torch-pruning's counter), bytes, sparsity."""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np

from ..model import example_inputs


def weight_layers(model) -> dict[str, Any]:
    """name -> module for every Conv/Linear: the layers whose weights techniques change."""
    from torch import nn

    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))}


def weights_bytes(model) -> bytes:
    return b"".join(t.detach().cpu().float().contiguous().numpy().tobytes()
                    for _, t in sorted(model.state_dict().items()) if t.is_floating_point())


def measure(model, spec) -> dict[str, Any]:
    """params, MACs for one batch, fp32 bytes and gzip bytes of the weights, share of zero weights."""
    import torch
    import torch_pruning as tp

    args = tuple(torch.from_numpy(v) for v in example_inputs(spec).values())
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, args[0] if len(args) == 1 else args)
    raw = weights_bytes(model)
    weights = [m.weight.detach().numpy() for m in weight_layers(model).values()]
    total = sum(w.size for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return {"params": int(params), "macs": int(macs), "weights_bytes": len(raw),
            "weights_gzip_bytes": len(gzip.compress(raw, compresslevel=6)),
            "sparsity": zeros / total if total else 0.0}


def distinct_values(model) -> dict[str, int]:
    return {n: int(np.unique(m.weight.detach().numpy()).size) for n, m in weight_layers(model).items()}


def channels(model) -> dict[str, int]:
    """Output channels (features) per Conv/Linear: what structured pruning shrinks."""
    return {n: int(m.weight.shape[0]) for n, m in weight_layers(model).items()}
