"""Unstructured magnitude pruning: zero the smallest weights of every Conv/Linear, fine-tune with
the mask held. The tensors keep their shape, so only a compressed file (or a runtime with sparse
kernels) gains; dense runtimes run exactly as fast as before.
"""

from __future__ import annotations

from typing import Any

from .netstats import weight_layers
from .training import fit, options as train_options

NOTE = ("unstructured sparsity shrinks the compressed (gzip/zstd) file, not the latency: "
        "dense runtimes (ONNX Runtime, LiteRT, ExecuTorch on CPU) run zeros as fast as any other "
        "weight unless the runtime has sparse kernels")


def apply(model, opts: dict[str, Any], ctx) -> tuple[Any, dict[str, Any]]:
    import torch

    masks = {}
    for name, layer in weight_layers(model).items():
        w = layer.weight.detach()
        k = int(round(opts["ratio"] * w.numel()))
        if k == 0:
            continue
        threshold = w.abs().flatten().kthvalue(k).values
        masks[name] = (w.abs() > threshold).to(w.dtype)
        layer.weight.data.mul_(masks[name])
    layers = weight_layers(model)

    def reapply() -> None:
        for name, mask in masks.items():
            layers[name].weight.data.mul_(mask)

    training = fit(model, ctx, opts["epochs"], opts["lr"], opts["batch_size"], opts["seed"],
                   after_step=reapply, **train_options(opts)) if opts["epochs"] else None
    with torch.no_grad():
        reapply()
    per_layer = {n: float((layers[n].weight == 0).float().mean()) for n in masks}
    return model, {"note": NOTE, "layer_sparsity": per_layer, "fine_tuning": training}
