"""Layer merging: fold BatchNorm into the convolution or linear layer that feeds it.

Done on the torch side, before any export or quantization, so every format gets the merged
graph: one fewer op per pair at run time, and the quantizer sees the weights that will really
run (quantizing a conv and then scaling by BN's factors would quantize the wrong range).
"""

from __future__ import annotations

import copy
from typing import Any


def _graph_nodes(gm) -> int:
    return sum(1 for n in gm.graph.nodes if n.op in ("call_module", "call_function", "call_method"))


def fold_batchnorm(model) -> tuple[Any, dict[str, Any]]:
    """A copy of `model` with every conv->BN and linear->BN pair folded, and a report.

    The report has the folded pairs and the traced graph's node counts before and after. A model
    that torch.fx cannot trace (data-dependent control flow, a TorchScript module) is returned
    unchanged with the reason, never an error: folding is an optimisation, not a requirement.
    """
    import torch
    from torch import fx, nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    if isinstance(model, torch.jit.ScriptModule):
        return model, {"applied": False, "reason": "TorchScript input: torch.fx cannot trace it"}
    try:
        gm = fx.symbolic_trace(copy.deepcopy(model))
    except Exception as exc:
        return model, {"applied": False,
                       "reason": f"torch.fx cannot trace the model ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:160]})"}
    before = _graph_nodes(gm)
    modules = dict(gm.named_modules())
    folded = []
    bn_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), bn_types):
            continue
        prev = node.args[0]
        if not isinstance(prev, fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        layer, bn = modules[prev.target], modules[node.target]
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            fused = fuse_conv_bn_eval(layer.eval(), bn.eval())
        elif isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
            fused = fuse_linear_bn_eval(layer.eval(), bn.eval())
        else:
            continue
        _set_module(gm, prev.target, fused)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded.append([str(prev.target), str(node.target)])
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    report = {"applied": True, "folded": folded, "torch_nodes_before": before, "torch_nodes_after": _graph_nodes(gm)}
    return (gm.eval() if folded else model), report


def _set_module(root, target: str, module) -> None:
    parent_name, _, name = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, name, module)


def prepared_model(ctx, recipe) -> tuple[Any, dict[str, Any]]:
    """The model a builder should convert: BN-folded unless the recipe says `fold_bn=false`."""
    if ctx.model is None:
        return None, {"applied": False, "reason": "ONNX input: no torch model to fold"}
    if not recipe.value("fold_bn"):
        return ctx.model, {"applied": False, "reason": "fold_bn=false in the recipe"}
    return fold_batchnorm(ctx.model)
