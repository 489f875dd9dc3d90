"""Real .tflite files built without TensorFlow: the LiteRT flatbuffer schema shipped in ai-edge-litert."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def fully_connected(path: Path, w: np.ndarray, b: np.ndarray, quant: dict | None = None) -> Path:
    """y = x @ w.T + b as one FULLY_CONNECTED op. `quant`: {"in": (scale, zp), "out": (scale, zp)}
    makes an int8 model with int8 input and output (weights symmetric per-tensor, bias int32)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def qp(scale, zero):
        q = s.QuantizationParametersT()
        q.scale, q.zeroPoint = [float(scale)], [int(zero)]
        return q

    def tensor(name, shape, ttype, buffer, q=None):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer, t.quantization = name.encode(), list(shape), ttype, buffer, q
        return t

    def buf(array=None):
        bt = s.BufferT()
        if array is not None:
            bt.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=np.uint8).tolist()
        return bt

    out_n, in_n = w.shape
    if quant is None:
        tensors = [tensor("input", (1, in_n), s.TensorType.FLOAT32, 1), tensor("w", w.shape, s.TensorType.FLOAT32, 2),
                   tensor("b", (out_n,), s.TensorType.FLOAT32, 3), tensor("output", (1, out_n), s.TensorType.FLOAT32, 4)]
        buffers = [buf(), buf(), buf(w.astype(np.float32)), buf(b.astype(np.float32)), buf()]
    else:
        (si, zi), (so, zo) = quant["in"], quant["out"]
        sw = float(np.abs(w).max()) / 127
        wq = np.clip(np.round(w / sw), -127, 127).astype(np.int8)
        bq = np.round(b / (si * sw)).astype(np.int32)
        tensors = [tensor("input", (1, in_n), s.TensorType.INT8, 1, qp(si, zi)),
                   tensor("w", w.shape, s.TensorType.INT8, 2, qp(sw, 0)),
                   tensor("b", (out_n,), s.TensorType.INT32, 3, qp(si * sw, 0)),
                   tensor("output", (1, out_n), s.TensorType.INT8, 4, qp(so, zo))]
        buffers = [buf(), buf(), buf(wq), buf(bq), buf()]
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = s.FullyConnectedOptionsT()
    graph = s.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators, graph.name = tensors, [0], [3], [op], b"main"
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version = 1 if quant is None else 4
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [graph], buffers
    model.description = b"edgekit test model"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def sub_and_add(path: Path, names: tuple[str, str], n: int = 4, dynamic: bool = False) -> Path:
    """Two inputs, two outputs: out0 = in0 - in1 (SUB: the order matters), out1 = in0 + in1.
    `names` are the input tensors' names, e.g. a converter's "serving_default_b:0"; `dynamic`
    makes the batch dimension dynamic (shape signature -1), as converters write it."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def tensor(name, buffer):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), [1, n], s.TensorType.FLOAT32, buffer
        if dynamic:
            t.shapeSignature = [-1, n]
        return t

    tensors = [tensor(names[0], 1), tensor(names[1], 2), tensor("difference", 3), tensor("total", 4)]
    buffers = [s.BufferT() for _ in range(5)]
    ops, codes = [], []
    for i, (code_id, out, options_type, options) in enumerate((
            (s.BuiltinOperator.SUB, 2, s.BuiltinOptions.SubOptions, s.SubOptionsT()),
            (s.BuiltinOperator.ADD, 3, s.BuiltinOptions.AddOptions, s.AddOptionsT()))):
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = i, [0, 1], [out]
        op.builtinOptionsType, op.builtinOptions = options_type, options
        ops.append(op)
        code = s.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = code_id
        code.version = 1
        codes.append(code)
    graph = s.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators, graph.name = tensors, [0, 1], [2, 3], ops, b"main"
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [graph], buffers
    model.description = b"edgekit test model"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path
