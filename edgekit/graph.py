"""What an ONNX file says about its inputs and outputs, with dynamic dimensions named.

A model exported from another framework rarely has fixed sizes (`height`, `width`, `N`); the
user must say what size to run it at, and this is where edgekit finds out which dims need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError, one_line

# onnx.TensorProto element types -> numpy names
ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
              9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int | str, ...]  # an int is a fixed size; a string names a dynamic dimension
    dtype: str

    @property
    def dynamic(self) -> list[str]:
        return [d for d in self.dims if isinstance(d, str)]

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.dims), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphIO:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    opset: int | None
    producer: str

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
                "opset": self.opset, "producer": self.producer}


def _info(value, index: int) -> TensorInfo:
    tensor = value.type.tensor_type
    dims: list[int | str] = []
    for i, d in enumerate(tensor.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or f"dim{i}")
    return TensorInfo(value.name, tuple(dims), ELEM_TYPES.get(tensor.elem_type, f"type{tensor.elem_type}"))


def describe_onnx(path: Path) -> GraphIO:
    """Inputs (initializers excluded, as older exporters list weights as inputs) and outputs."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX file ({one_line(exc, limit=200)}). "
                         f"Fix: export the model again, or check the path") from None
    weights = {t.name for t in model.graph.initializer}
    inputs = tuple(_info(v, i) for i, v in enumerate(model.graph.input) if v.name not in weights)
    outputs = tuple(_info(v, i) for i, v in enumerate(model.graph.output))
    if not inputs or not outputs:
        raise ModelError(f"{path}: the graph declares no {'inputs' if not inputs else 'outputs'}. "
                         f"Fix: export the model again")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    producer = " ".join(x for x in (model.producer_name, model.producer_version) if x)
    return GraphIO(inputs, outputs, opset, producer)


def check_onnx(path: Path) -> None:
    """The ONNX checker, then a real load in onnxruntime. A file either one rejects (an unknown op,
    an output no node makes, a truncated graph) is refused before anything is built: otherwise it
    is copied into an `onnx:fp32` variant, cached, pushed, and fails only on the device."""
    import onnx

    try:
        onnx.checker.check_model(str(path))  # by path: external data and files over 2 GB
    except Exception as exc:
        raise ModelError(f"{path}: the ONNX checker rejects it ({one_line(exc, limit=200)}). Fix: export the model "
                         f"again with a supported opset, or repair the graph") from None
    refusal = onnxruntime_refusal(path)
    if refusal is not None:
        import onnxruntime as ort

        raise ModelError(f"{path}: onnxruntime cannot load it ({refusal}). Fix: export the model again, or "
                         f"check that its ops are ones onnxruntime {ort.__version__} supports")


def onnxruntime_refusal(path: Path) -> str | None:
    """Why onnxruntime on the CPU cannot load the file (one line), or None when it can: the user's
    file before it is built from, and each converter's output before it is cached."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return one_line(exc, limit=200)
    return None
