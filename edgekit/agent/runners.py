"""Runtimes behind one interface: load an artifact, describe its inputs, run one batch."""

from __future__ import annotations

from typing import Dict, List, Optional

from .protocol import AgentError


class Runner:
    name = ""

    def load(self, path: str, threads: int) -> None:
        raise NotImplementedError

    def input_specs(self) -> List[dict]:
        """[{name, shape, dtype}] with any dynamic dimension given as 1."""
        raise NotImplementedError

    def run(self, feeds: Dict[str, object]) -> List[object]:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise AgentError("runtime_missing", "onnxruntime is not installed on the device "
                             "(pip install onnxruntime): {}".format(exc))
        self.ort = ort
        self.session = None

    def load(self, path: str, threads: int) -> None:
        opts = self.ort.SessionOptions()
        opts.log_severity_level = 3
        if threads > 0:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = self.ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise AgentError("load_failed", "onnxruntime cannot load {}: {}".format(path, _one_line(exc)))

    def input_specs(self) -> List[dict]:
        types = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
                 "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
                 "tensor(double)": "float64", "tensor(bool)": "bool"}
        return [{"name": i.name, "shape": [d if isinstance(d, int) and d > 0 else 1 for d in i.shape],
                 "dtype": types.get(i.type, "float32")} for i in self.session.get_inputs()]

    def run(self, feeds):
        return self.session.run(None, feeds)

    def describe(self) -> dict:
        return {"name": self.name, "version": self.ort.__version__,
                "providers": self.session.get_providers() if self.session else self.ort.get_available_providers()}


RUNNERS = {"onnxruntime": OnnxRuntimeRunner}


def make_runner(name: str) -> Runner:
    cls = RUNNERS.get(name)
    if cls is None:
        raise AgentError("bad_request", "unknown runtime {!r}; this agent knows {}".format(name, ", ".join(sorted(RUNNERS))))
    return cls()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300]


def generated_inputs(specs: List[dict], seed: int = 0) -> Dict[str, object]:
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        dtype = spec["dtype"]
        if dtype.startswith("float"):
            feeds[spec["name"]] = rng.standard_normal(spec["shape"]).astype(dtype)
        elif dtype == "bool":
            feeds[spec["name"]] = rng.integers(0, 2, spec["shape"]).astype(bool)
        else:
            feeds[spec["name"]] = rng.integers(0, 10, spec["shape"]).astype(dtype)
    return feeds


def load_npz(path: str) -> Dict[str, object]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise AgentError("bad_request", "cannot read inputs {}: {}".format(path, _one_line(exc)))


def first_batch(arrays: Dict[str, object]) -> Dict[str, object]:
    """Inputs files hold batches stacked on a leading axis; benchmarks use the first."""
    return {k: v[0] for k, v in arrays.items()}
