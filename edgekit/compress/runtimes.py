"""Run a built artifact on the host with its own format's runtime, and count its graph nodes.

Parity must come from the runtime the device will use (ONNX Runtime, the LiteRT interpreter,
torch for TorchScript, the ExecuTorch runtime), not from the torch model it was made from:
a converter bug shows up only there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..agent.protocol import AgentError
from ..agent.runners import make_runner
from ..agent.runners import quantize as quantize_array  # noqa: F401 - for callers feeding an interpreter themselves
from ..errors import CompressError
from ..model import Dataset, batches
from ..settings import ModelSpec
from .registry import FORMATS

# format -> the runner table's runtime name, as the formats declare it
RUNTIME_OF = {f.name: f.runtime for f in FORMATS.values()}


def outputs(fmt: str, path: Path, data: Dataset, spec: ModelSpec) -> list[np.ndarray]:
    """Every output of the artifact, in its output order, each stacked over the calls of
    `batches(data, spec)`: shape [calls, *per-call shape]. Floating outputs come back as float32
    (quantized TFLite outputs dequantized); integer and bool outputs keep their dtype, so a
    class index or a mask is compared as what it is.

    The artifact runs through the agent's own runner (ONNX Runtime on the CPU provider), so host
    parity and device measurements share the feeding, casting and quantizing code."""
    runtime = RUNTIME_OF.get(fmt)
    if runtime is None:
        raise CompressError(f"no host runtime for format {fmt!r}")
    try:
        runner = make_runner(runtime, "cpu")
        runner.load(str(path), 0)
    except AgentError as exc:
        raise CompressError(exc.message) from None
    calls = []
    for i, feeds in enumerate(batches(data, spec)):
        ordered = {s.name: feeds[s.name] for s in spec.inputs}  # spec order: runners fall back to position
        try:
            calls.append(runner.run(ordered))
        except AgentError as exc:
            raise CompressError(exc.message) from None
        except Exception as exc:
            raise CompressError(f"{runtime} inference failed on call {i}: {' '.join(str(exc).split())[:300]}") from None
    return stack_calls(calls, runner.output_names())


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
