"""How much of an artifact a reduced-precision recipe really changed, read from the artifact itself.

A quantizer that skips what it does not understand (ONNX Runtime's skips `If`/`Loop` subgraphs,
and kernels it has no int8 version of) still writes a valid file, often with a few stray
QuantizeLinear nodes, so "it built" says nothing. Counting the compute ops - the ones that
carry the weights and the arithmetic - and how many of them run on int8 (or fp16) weights is
what tells an int8 variant from a float one with a new name. Zero is a failure
(`require_quantized`), never an int8 variant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CompressError

# ONNX ops that hold the weights and the multiply-adds
ONNX_COMPUTE = ("Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention")
# their integer forms: ONNX Runtime's QOperator/dynamic kernels (onnxruntime/quantization/registry.py)
ONNX_INTEGER = ("QLinearConv", "QLinearConvTranspose", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger",
                "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QAttention",
                "QOrderedMatMul", "MatMulNBits")
# where the weight enters each float compute op (MatMul: either side may be the constant)
_WEIGHT_INPUTS = {"MatMul": (0, 1), "LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2), "MultiHeadAttention": (1, 2)}
_PASSTHROUGH = ("Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten")
_SUBGRAPH_OWNERS = ("If", "Loop", "Scan")
FLOAT16 = (10, 16)  # TensorProto.FLOAT16, BFLOAT16
SHOWN = 8  # names of float ops listed in the record


def _fraction(m: int, n: int) -> float:
    return round(m / n, 4) if n else 0.0


# --------------------------------------------------------------------------- ONNX


class _Scope:
    """Name resolution across nested graphs: a subgraph sees its own values, then its parents'."""

    def __init__(self, graph, parent: _Scope | None = None) -> None:
        self.parent = parent
        self.producers = {o: n for n in graph.node for o in n.output}
        self.initializers = {i.name: i for i in graph.initializer}

    def producer(self, name: str):
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.initializers:
                return None, scope.initializers[name]
            if name in scope.producers:
                return scope.producers[name], None
            scope = scope.parent
        return None, None

    def source(self, name: str):
        """The node or initializer a value comes from, looking through reshapes and transposes."""
        for _ in range(16):
            node, init = self.producer(name)
            if node is None or node.op_type not in _PASSTHROUGH or not node.input:
                return node, init
            name = node.input[0]
        return None, None


def _elem_type(node, init) -> int | None:
    if init is not None:
        return init.data_type
    if node is not None and node.op_type == "Constant":
        for attr in node.attribute:
            if attr.name == "value":
                return attr.t.data_type
    return None


def _judge(node, scope: _Scope, kind: str) -> tuple[bool, bool]:
    """(reduced, weight_only) for one compute op."""
    if node.op_type in ONNX_INTEGER:
        return kind == "int8", False
    slots = [i for i in _WEIGHT_INPUTS.get(node.op_type, (1,)) if i < len(node.input) and node.input[i]]
    sources = {i: scope.source(node.input[i]) for i in slots}
    if kind == "fp16":
        return any(_elem_type(*sources[i]) in FLOAT16 for i in slots), False
    dq = {i for i, (n, _) in sources.items() if n is not None and n.op_type == "DequantizeLinear"}
    if not dq:
        return False, False
    activation = node.input[0] if node.input else ""
    act_node, _ = scope.source(activation) if activation else (None, None)
    act_dq = act_node is not None and act_node.op_type == "DequantizeLinear"
    return True, not act_dq and 0 not in dq


def _walk(graph, parent: _Scope | None, owner: str | None, kind: str, ops: list[dict]) -> None:
    scope = _Scope(graph, parent)
    for node in graph.node:
        if node.op_type in ONNX_COMPUTE or node.op_type in ONNX_INTEGER:
            reduced, weight_only = _judge(node, scope, kind)
            ops.append({"op": node.op_type, "name": node.name, "reduced": reduced, "weight_only": weight_only,
                        "owner": owner})
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.HasField("g") else list(attr.graphs)
            for sub in subgraphs:
                _walk(sub, scope, owner or f"{node.op_type} {node.name or '(unnamed)'!r}", kind, ops)


def onnx_counts(model_or_path, kind: str = "int8") -> dict[str, Any]:
    """Compute ops of an ONNX graph, If/Loop/Scan bodies included, and how many run reduced.

    int8: an integer kernel (QLinearConv, MatMulInteger, DynamicQuantizeLSTM, ...) or a float op
    whose weight comes through DequantizeLinear (QDQ). fp16: a weight stored as float16.
    """
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    ops: list[dict] = []
    _walk(model.graph, None, None, kind, ops)
    reduced = [o for o in ops if o["reduced"]]
    inside = [o for o in ops if o["owner"]]
    how = ("ONNX graph walk, If/Loop/Scan bodies included: compute ops are " + "/".join(ONNX_COMPUTE) +
           (" and their integer kernels; quantized = an integer kernel (QLinear*, *Integer, DynamicQuantize*) or a "
            "weight through DequantizeLinear (QDQ)" if kind == "int8" else "; reduced = weight stored as float16"))
    out: dict[str, Any] = {
        "compute_ops": len(ops), "quantized_ops": len(reduced), "fraction": _fraction(len(reduced), len(ops)),
        "in_subgraphs": len(inside), "quantized_in_subgraphs": sum(o["reduced"] for o in inside),
        "op_types": {t: sum(o["op"] == t for o in ops) for t in sorted({o["op"] for o in ops})},
        "float_ops": [f"{o['op']} {o['name']}" for o in ops if not o["reduced"]][:SHOWN],
        "subgraph_owners": sorted({o["owner"] for o in inside}), "how": how,
    }
    if kind == "int8":
        out["weight_only"] = sum(o["weight_only"] for o in ops)
    else:
        out["precision"] = "float16"
    return out


def onnx_subgraph_reason(counts: dict[str, Any], quantizer: str) -> str | None:
    """Why `quantizer`, which does not descend into subgraphs, can reach none of the compute ops."""
    n = counts["compute_ops"]
    if n and counts["in_subgraphs"] == n:
        return (f"all {n} compute ops are inside If/Loop subgraphs ({', '.join(counts['subgraph_owners'])}), "
                f"which {quantizer} skips")
    return None


# --------------------------------------------------------------------------- TFLite

TFLITE_COMPUTE = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D", "FULLY_CONNECTED", "BATCH_MATMUL",
                  "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
                  "RNN", "EMBEDDING_LOOKUP")
_TFLITE_INT = ("int8", "uint8", "int16", "int4")


def tflite_counts(path: Path, kind: str = "int8") -> dict[str, Any]:
    """Compute ops of the .tflite's main subgraph whose weights are int8 (or float16), and int8 tensors.

    Read with the LiteRT interpreter (no delegate, so the ops are the file's own); a weight fed
    by a DEQUANTIZE op counts by the dtype it is stored in.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the interpreter's only op listing (also used by TF's own tools)
    produced_by = {o: op for op in ops for o in op["outputs"]}

    def stored(index: int) -> str | None:
        op = produced_by.get(index)
        if op is not None and op["op_name"] == "DEQUANTIZE" and len(op["inputs"]):
            index = op["inputs"][0]
        return tensors.get(index)

    wanted = _TFLITE_INT if kind == "int8" else ("float16",)
    compute = [op for op in ops if op["op_name"] in TFLITE_COMPUTE]
    reduced = [op for op in compute if any(stored(i) in wanted for i in list(op["inputs"])[1:] if i >= 0)]
    reduced_ids = {id(op) for op in reduced}
    int8_tensors = sum(1 for d in tensors.values() if d in ("int8", "uint8"))
    out: dict[str, Any] = {
        "compute_ops": len(compute), "quantized_ops": len(reduced), "fraction": _fraction(len(reduced), len(compute)),
        "in_subgraphs": 0, "float_ops": [op["op_name"] for op in compute if id(op) not in reduced_ids][:SHOWN],
        "int8_tensors": int8_tensors, "tensors": len(tensors),
        "how": ("LiteRT interpreter op/tensor details of the main subgraph: compute ops are "
                + "/".join(TFLITE_COMPUTE) + ("; quantized = a weight stored as int8/uint8/int16/int4" if kind == "int8"
                                              else "; reduced = a weight stored as float16")),
    }
    subgraphs = interp.num_subgraphs()
    if subgraphs > 1:
        out["uncounted_subgraphs"] = subgraphs - 1
    if kind != "int8":
        out["precision"] = "float16"
    return out


# --------------------------------------------------------------------------- ExecuTorch

_ET_COMPUTE = ("aten.convolution.", "aten.linear.", "aten.addmm.", "aten.mm.", "aten.bmm.", "aten.matmul.")
_ET_DQ = ("dequantize_per_channel", "dequantize_per_tensor", "dequantize_affine")


def _op_name(target) -> str:
    """'aten.convolution.default' for edge, aten and quantized_decomposed ops alike."""
    return getattr(target, "__name__", None) or str(target)


def _et_ops(graph, delegated: bool) -> list[dict]:
    out = []
    for node in graph.nodes:
        name = _op_name(node.target) if node.op == "call_function" else ""
        if not name.startswith(_ET_COMPUTE):
            continue
        weight = node.args[2 if name.startswith("aten.addmm") else 1] if len(node.args) > 1 else None
        source = _op_name(weight.target) if getattr(weight, "op", None) == "call_function" else ""
        out.append({"op": name.rsplit(".", 1)[0], "delegated": delegated,
                    "reduced": any(dq in source for dq in _ET_DQ)})
    return out


def executorch_counts(edge_program) -> dict[str, Any]:
    """Compute ops of a lowered ExecuTorch program, inside and outside its XNNPACK partitions.

    Read from the program before serialization (the .pte holds the partitions as opaque XNNPACK
    payloads): a partition's `original_module` keeps its aten ops and the dequantize nodes that
    feed them. Anything unreadable yields "unknown" rather than a guess.
    """
    how = ("lowered ExecuTorch program before serialization: compute ops are aten convolution/linear/mm/bmm/"
           "addmm/matmul, in the XNNPACK partitions and outside; quantized = weight through a dequantize node")
    try:
        program = edge_program.exported_program()
        ops = _et_ops(program.graph, False)
        partitions = 0
        for _, sub in program.graph_module.named_children():
            original = getattr(sub, "original_module", None)
            if original is None:
                continue
            partitions += 1
            ops += _et_ops(original.graph, True)
    except Exception as exc:  # a changed ExecuTorch internals API: say so, do not guess
        return {"compute_ops": "unknown", "quantized_ops": "unknown", "fraction": None, "in_subgraphs": 0,
                "how": f"unknown: the lowered program could not be read ({type(exc).__name__})"}
    reduced = [o for o in ops if o["reduced"]]
    return {"compute_ops": len(ops), "quantized_ops": len(reduced), "fraction": _fraction(len(reduced), len(ops)),
            "in_subgraphs": 0, "delegated_ops": sum(o["delegated"] for o in ops), "xnnpack_partitions": partitions,
            "float_ops": [o["op"] for o in ops if not o["reduced"]][:SHOWN], "how": how}


# --------------------------------------------------------------------------- the rule


def require_quantized(counts: dict[str, Any], reason: str | None = None, fix: str = "") -> None:
    """An int8 artifact in which no compute op is int8 is a failure: one line, the cause, the fix."""
    n, m = counts.get("compute_ops"), counts.get("quantized_ops")
    if not isinstance(n, int) or not isinstance(m, int) or m > 0:
        return
    if reason is None:
        if n == 0:
            reason = "the graph has no compute op (Conv, Gemm, MatMul, LSTM, ...) to quantize"
        else:
            kinds = sorted(counts.get("op_types") or {name.split()[0] for name in counts.get("float_ops", [])})
            reason = f"the quantizer left all {n} compute ops float ({', '.join(kinds)})"
    raise CompressError(f"nothing was quantized: {reason}" + (f". Fix: {fix}" if fix else ""))
