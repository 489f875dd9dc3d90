"""Run a built artifact on the host with its own format's runtime, and count its graph nodes.

Parity must come from the runtime the device will use (ONNX Runtime, the LiteRT interpreter,
torch for TorchScript, the ExecuTorch runtime), not from the torch model it was made from:
a converter bug shows up only there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import CompressError
from ..model import Dataset, batches
from ..spec import ModelSpec


def outputs(fmt: str, path: Path, data: Dataset, spec: ModelSpec) -> list[np.ndarray]:
    """Every output of the artifact, in its output order, each stacked over the calls of
    `batches(data, spec)`: shape [calls, *per-call shape]. Floating outputs come back as float32
    (quantized TFLite outputs dequantized); integer and bool outputs keep their dtype, so a
    class index or a mask is compared as what it is."""
    run = {"onnx": _onnx, "tflite": _tflite, "torchscript": _torchscript, "executorch": _executorch}.get(fmt)
    if run is None:
        raise CompressError(f"no host runtime for format {fmt!r}")
    names: list[str] = []
    return stack_calls(list(run(path, list(batches(data, spec)), spec, names)), names)


def stack_calls(calls: list[list[np.ndarray]], names: list[str] | None = None) -> list[np.ndarray]:
    """Per-call output lists -> one array per output. A model whose output count or shape changes
    between calls of the same input shape cannot be compared sample by sample: say which."""
    if not calls:
        return []
    count = len(calls[0])
    if any(len(c) != count for c in calls):
        raise CompressError(f"the artifact returned {sorted({len(c) for c in calls})} outputs on different calls")
    stacked = []
    for j in range(count):
        arrays = [_as_output(c[j]) for c in calls]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            label = f"output {j}" + (f" ({names[j]})" if names and j < len(names) else "")
            raise CompressError(f"{label} changes shape between calls ({', '.join(map(str, sorted(shapes)))}): "
                                f"parity needs one shape per output; give every batch the same input shapes")
        stacked.append(np.stack(arrays))
    return stacked


def _as_output(value) -> np.ndarray:
    a = np.asarray(value)
    return a.astype(np.float32) if a.dtype.kind == "f" else a


def first_output_samples(outs: list[np.ndarray]) -> np.ndarray:
    """The first output with calls and batch merged ([samples, ...]): what `compare` takes until it
    compares every output."""
    first = outs[0]
    return first.reshape(-1, *first.shape[2:])


def _onnx(path: Path, feeds: list[dict], spec: ModelSpec, names: list[str]):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in session.get_inputs()}
    names.extend(o.name for o in session.get_outputs())
    for f in feeds:
        cast = {k: v.astype(np.float16) if types.get(k) == "tensor(float16)" else v for k, v in f.items()}
        yield session.run(None, cast)


def _tflite(path: Path, feeds: list[dict], spec: ModelSpec, names: list[str]):
    """LiteRT interpreter; int8/uint8 inputs are quantized with the tensor's own scale/zero point."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=2)
    interp.allocate_tensors()
    ins, outs = interp.get_input_details(), interp.get_output_details()
    order = _tflite_input_order(ins, spec)
    for f in feeds:
        for detail, name in zip(ins, order):
            interp.set_tensor(detail["index"], quantize_array(f[name], detail))
        interp.invoke()
        yield [dequantize_array(interp.get_tensor(d["index"]), d) for d in outs]


def _tflite_input_order(details: list[dict], spec: ModelSpec) -> list[str]:
    names = [i.name for i in spec.inputs]
    if len(names) == 1:
        return names
    by_name = [next((n for n in names if n in d["name"]), None) for d in details]
    return by_name if None not in by_name else names


def quantize_array(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu" and np.asarray(x).dtype.kind == "f":
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return np.asarray(x).astype(dtype)


def dequantize_array(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.dtype(detail["dtype"]).kind in "iu":
        scale, zero = detail["quantization"]
        if scale:
            return (y.astype(np.float32) - zero) * scale
    return y


def _torchscript(path: Path, feeds: list[dict], spec: ModelSpec, names: list[str]):
    import torch

    model = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        for f in feeds:
            out = model(*[torch.from_numpy(np.ascontiguousarray(f[i.name])) for i in spec.inputs])
            yield [o.numpy() for o in (out if isinstance(out, (tuple, list)) else [out])]


def _executorch(path: Path, feeds: list[dict], spec: ModelSpec, names: list[str]):
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    for f in feeds:
        out = method.execute([torch.from_numpy(np.ascontiguousarray(f[i.name])) for i in spec.inputs])
        yield [o.numpy() for o in out]


def node_count(fmt: str, path: Path) -> int | None:
    """Operators in the artifact's graph (delegated subgraphs count as one), None if unknown."""
    try:
        if fmt == "onnx":
            import onnx

            return len(onnx.load(str(path), load_external_data=False).graph.node)
        if fmt == "torchscript":
            import torch

            graph = torch.jit.load(str(path), map_location="cpu").graph
            return sum(1 for n in graph.nodes() if not n.kind().startswith("prim::Constant"))
        if fmt == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            return len(Interpreter(model_path=str(path))._get_ops_details())
    except Exception:
        return None
    return None
