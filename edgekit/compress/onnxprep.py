"""Make an ONNX graph from any exporter quantizable by ONNX Runtime, and record what that took.

ONNX Runtime's quantizer assumes graphs like torch's own exports. Files from other exporters
break it in known ways (onnxruntime/quantization sources, 1.32):

- weights as `Constant` nodes (paddle2onnx, tf2onnx): `quantize_dynamic` stops with "Expected
  ... to be an initializer" and static QDQ skips those weights;
- opset < 13: per-channel QDQ writes a DequantizeLinear with an `axis`, which opset 13 added,
  so ONNX Runtime rejects the file ("INVALID_GRAPH ... tensor(int32)");
- weights of an `If`/`Loop` body stored in the outer graph: with `EnableSubgraph` the subgraph
  quantizer looks only at its own initializers (LSTM crashes, MatMul stays float);
- missing shapes: a tensor of unknown type is never quantized.

`prepare` fixes each of those, then runs ONNX Runtime's own `quant_pre_process` (symbolic shape
inference, falling back to ONNX shape inference when it fails, and the basic optimizer).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CompressError, one_line

PER_CHANNEL_OPSET = 13  # DequantizeLinear's `axis` (per-channel scales) arrived in opset 13


def _subgraphs(graph):
    for node in graph.node:
        for attr in node.attribute:
            yield from ([attr.g] if attr.HasField("g") else list(attr.graphs))


def _all_graphs(graph):
    yield graph
    for sub in _subgraphs(graph):
        yield from _all_graphs(sub)


def _constant_tensor(node):
    """The tensor a Constant node holds, or None for the kinds an initializer cannot hold."""
    from onnx import numpy_helper

    for attr in node.attribute:
        name = node.output[0]
        if attr.name == "value":
            tensor = type(attr.t)()
            tensor.CopyFrom(attr.t)
            tensor.name = name
            return tensor
        scalar = {"value_float": (attr.f, np.float32), "value_int": (attr.i, np.int64)}.get(attr.name)
        if scalar is not None:
            return numpy_helper.from_array(np.array(scalar[0], dtype=scalar[1]), name)
        listed = {"value_floats": (attr.floats, np.float32), "value_ints": (attr.ints, np.int64)}.get(attr.name)
        if listed is not None:
            return numpy_helper.from_array(np.array(list(listed[0]), dtype=listed[1]), name)
    return None  # sparse_value, strings


def fold_constants(model) -> int:
    """Every Constant node (main graph and subgraphs) becomes an initializer of its graph."""
    folded = 0
    for graph in _all_graphs(model.graph):
        outputs = {o.name for o in graph.output}
        kept = []
        for node in graph.node:
            tensor = _constant_tensor(node) if node.op_type == "Constant" and node.output[0] not in outputs else None
            if tensor is None:
                kept.append(node)
                continue
            graph.initializer.append(tensor)
            folded += 1
        if folded:
            del graph.node[:]
            graph.node.extend(kept)
    return folded


def drop_weight_inputs(model) -> int:
    """Initializers also listed as graph inputs (old exporters' keep_initializers_as_inputs) are
    overridable, so neither the optimizer nor the quantizer treats them as constant weights."""
    if model.ir_version < 4:  # before IR 4 every initializer had to be an input
        return 0
    names = {i.name for i in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in names]
    dropped = len(model.graph.input) - len(kept)
    if dropped:
        del model.graph.input[:]
        model.graph.input.extend(kept)
    return dropped


def name_nodes(model) -> int:
    """Unnamed nodes cannot be excluded from quantization by name (onnx:int8-mixed needs that)."""
    named = 0
    for g, graph in enumerate(_all_graphs(model.graph)):
        for i, node in enumerate(graph.node):
            if not node.name:
                node.name = f"{node.op_type}_{g}_{i}"
                named += 1
    return named


def opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgrade_opset(model, target: int, fix: str):
    """onnx.version_converter to `target`; one line naming the fix when it cannot."""
    import onnx

    before = opset(model)
    try:
        upgraded = onnx.version_converter.convert_version(model, target)
        onnx.checker.check_model(upgraded)
    except Exception as exc:
        raise CompressError(f"per-channel int8 needs opset >= {target} and upgrading this graph from opset "
                            f"{before} failed (onnx.version_converter: {one_line(exc, limit=200)}). Fix: {fix}") from None
    return upgraded


def localize_subgraph_weights(model) -> dict[str, int]:
    """Outer-graph float initializers a subgraph reads go into that subgraph: moved when only it
    reads them, copied when several graphs do (each copy is quantized, so sizes stay below fp32)."""
    from onnx import TensorProto

    top = {i.name: i for i in model.graph.initializer
           if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)}
    readers: dict[str, dict[int, Any]] = {}

    def visit(graph, shadowed: set[str]) -> None:
        is_top = graph is model.graph
        local = {i.name for i in graph.initializer} | {i.name for i in graph.input} | \
            {o for n in graph.node for o in n.output}
        for node in graph.node:
            for name in node.input:
                if name in top and (is_top or name not in local | shadowed):
                    readers.setdefault(name, {})[id(graph)] = graph
        inner = (local - set(top)) if is_top else shadowed | local
        for sub in _subgraphs(graph):
            visit(sub, inner)

    visit(model.graph, set())
    moved = copied = 0
    for name, graphs in readers.items():
        subs = [g for g in graphs.values() if g is not model.graph]
        if not subs:
            continue
        for graph in subs:
            graph.initializer.append(top[name])  # protobuf appends a copy
        if len(subs) == len(graphs) == 1:
            model.graph.initializer.remove(top[name])
            moved += 1
        else:
            copied += len(subs)
    return {"moved": moved, "copied": copied}


@contextlib.contextmanager
def _captured(logger_name: str):
    """ORT's pre-processor logs (not raises) an optimizer failure: keep it for the record, off stderr."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                records.append(record.getMessage())

    logger = logging.getLogger(logger_name)
    handler, propagate = Keep(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _pre_process(src: Path, dst: Path, optimize: bool, fix: str) -> dict[str, str]:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    done: dict[str, str] = {}
    with _captured("onnxruntime.quantization.shape_inference") as errors:
        try:
            quant_pre_process(str(src), str(dst), skip_optimization=not optimize, skip_symbolic_shape=False)
            done["shape_inference"] = "symbolic (onnxruntime SymbolicShapeInference) + onnx"
        except Exception as exc:
            symbolic = one_line(exc, limit=200)
            try:
                quant_pre_process(str(src), str(dst), skip_optimization=not optimize, skip_symbolic_shape=True)
            except Exception as exc2:
                raise CompressError(f"onnxruntime quant_pre_process failed with and without symbolic shape "
                                    f"inference ({one_line(exc2, limit=200)}). Fix: {fix}") from None
            done["shape_inference"] = f"onnx only (symbolic shape inference failed: {symbolic})"
    if not optimize:
        done["optimizer"] = "skipped"
    elif any("Optimization Failed" in e for e in errors):
        done["optimizer"] = "failed, skipped (onnxruntime basic optimizer)"
    else:
        done["optimizer"] = "onnxruntime basic level (constant folding, redundant nodes, fusions)"
    return done


def prepare(src: Path, dst: Path, min_opset: int | None = None, subgraph_weights: bool = False,
            fix: str = "onnx:int8-dynamic") -> dict[str, Any]:
    """Write the quantizable form of `src` to `dst`; returns what was done (recorded in variant.json)."""
    import onnx

    model = onnx.load(str(src))
    record: dict[str, Any] = {"constants_folded": fold_constants(model), "weight_inputs_dropped":
                              drop_weight_inputs(model), "nodes_named": name_nodes(model)}
    before = opset(model)
    if min_opset is not None and before < min_opset:
        model = upgrade_opset(model, min_opset, fix)
    record["opset"] = {"from": before, "to": opset(model)}
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "staged.onnx"
        onnx.save(model, str(staged))
        record.update(_pre_process(staged, dst, optimize=True, fix=fix))
    if subgraph_weights:
        model = onnx.load(str(dst))
        if any(True for _ in _subgraphs(model.graph)):
            record["subgraph_weights"] = localize_subgraph_weights(model)
            onnx.save(model, str(dst))
    return record
