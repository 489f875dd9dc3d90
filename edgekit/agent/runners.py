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

    def bind(self, feeds: Dict[str, object]):
        """A zero-argument call running one inference on `feeds`: what the measured loop times."""
        return lambda: self.run(feeds)


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime. `provider`: "auto" (CUDA / TensorRT when present, else CPU), "cpu", "cuda",
    "tensorrt", or a full provider name; forcing one the device lacks is a runtime_missing error."""

    name = "onnxruntime"
    SHORT = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}

    def __init__(self, provider: str = "auto") -> None:
        self.provider = provider
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
            self.session = self.ort.InferenceSession(path, sess_options=opts, providers=self.providers())
        except AgentError:
            raise
        except Exception as exc:
            raise AgentError("load_failed", "onnxruntime cannot load {}: {}".format(path, _one_line(exc)))

    def providers(self) -> List[str]:
        available = self.ort.get_available_providers()
        if self.provider == "auto":
            chosen = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
            return chosen + ["CPUExecutionProvider"]
        name = self.SHORT.get(self.provider.lower(), self.provider)
        if name not in available:
            raise AgentError("runtime_missing", "execution provider {} is not available here (this onnxruntime "
                             "has {}); use --provider auto or install onnxruntime-gpu".format(name, ", ".join(available)))
        return [name] + (["CPUExecutionProvider"] if name != "CPUExecutionProvider" else [])

    def input_specs(self) -> List[dict]:
        types = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
                 "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
                 "tensor(double)": "float64", "tensor(bool)": "bool"}
        return [{"name": i.name, "shape": [d if isinstance(d, int) and d > 0 else 1 for d in i.shape],
                 "dtype": types.get(i.type, "float32")} for i in self.session.get_inputs()]

    def run(self, feeds):
        return self.session.run(None, feeds)

    def bind(self, feeds):
        import functools

        return functools.partial(self.session.run, None, feeds)

    def describe(self) -> dict:
        return {"name": self.name, "version": self.ort.__version__,
                "providers": self.session.get_providers() if self.session else self.ort.get_available_providers()}


def _import_litert():
    """(Interpreter class, package, version): ai_edge_litert, else tflite_runtime, else tensorflow.lite."""
    tried = []
    for module, dist in (("ai_edge_litert.interpreter", "ai-edge-litert"), ("tflite_runtime.interpreter", "tflite-runtime"),
                         ("tensorflow.lite", "tensorflow")):
        try:
            mod = __import__(module, fromlist=["Interpreter"])
            return mod.Interpreter, dist, _dist_version(dist)
        except Exception as exc:  # tflite-runtime 2.14 raises on import under numpy 2: try the next
            tried.append("{}: {}".format(module, _one_line(exc)))
    raise AgentError("runtime_missing", "no TFLite runtime (pip install ai-edge-litert): " + "; ".join(tried))


def _dist_version(dist: str) -> Optional[str]:
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:
        return None


class LiteRtRunner(Runner):
    """LiteRT / TFLite. XNNPACK is the interpreter's default CPU delegate; quantized inputs are
    quantized from float feeds and quantized outputs dequantized, with each tensor's scale/zero point."""

    name = "tflite"

    def __init__(self, provider: str = "auto") -> None:
        self.Interpreter, self.package, self.version = _import_litert()
        self.interp = None
        self.threads = 0

    def load(self, path: str, threads: int) -> None:
        self.threads = threads
        try:
            self.interp = self.Interpreter(model_path=path, num_threads=threads if threads > 0 else None)
            self.interp.allocate_tensors()
        except Exception as exc:
            raise AgentError("load_failed", "{} cannot load {}: {}".format(self.package, path, _one_line(exc)))
        self.inputs = self.interp.get_input_details()
        self.outputs = self.interp.get_output_details()

    def input_specs(self) -> List[dict]:
        """Quantized inputs are described as float32: the runner quantizes them."""
        specs = []
        for d in self.inputs:
            dtype = d["dtype"].__name__ if hasattr(d["dtype"], "__name__") else str(d["dtype"])
            if _quant(d) is not None:
                dtype = "float32"
            specs.append({"name": d["name"], "shape": [int(x) if x > 0 else 1 for x in d["shape"]], "dtype": dtype})
        return specs

    def run(self, feeds):
        import numpy as np

        for d, value in zip(self.inputs, self._ordered(feeds)):
            q = _quant(d)
            value = np.asarray(value)
            if q is not None and value.dtype.kind == "f":
                scale, zero = q
                info = np.iinfo(d["dtype"])
                value = np.clip(np.round(value / scale) + zero, info.min, info.max)
            self.interp.set_tensor(d["index"], value.astype(d["dtype"], copy=False).reshape(d["shape"]))
        self.interp.invoke()
        outs = []
        for d in self.outputs:
            value = self.interp.get_tensor(d["index"])
            q = _quant(d)
            if q is not None:
                value = (value.astype(np.float32) - q[1]) * q[0]
            outs.append(value)
        return outs

    def _ordered(self, feeds):
        if all(d["name"] in feeds for d in self.inputs):
            return [feeds[d["name"]] for d in self.inputs]
        if len(feeds) == len(self.inputs):  # names differ between converters: go by position
            return list(feeds.values())
        raise AgentError("bad_request", "inputs {} do not match the model's {}".format(
            sorted(feeds), [d["name"] for d in self.inputs]))

    def describe(self) -> dict:
        return {"name": self.name, "package": self.package, "version": self.version, "threads": self.threads,
                "delegate": "xnnpack (interpreter default)" if self.package == "ai-edge-litert" else "default"}


def _quant(detail) -> Optional[tuple]:
    """(scale, zero point) of an integer tensor with per-tensor quantization, else None."""
    scale, zero = detail.get("quantization", (0.0, 0))
    if scale and getattr(detail["dtype"], "__name__", "") in ("int8", "uint8", "int16"):
        return float(scale), int(zero)
    return None


class TorchScriptRunner(Runner):
    """TorchScript through torch.jit.load on the CPU."""

    name = "torch"

    def __init__(self, provider: str = "auto") -> None:
        try:
            import torch
        except ImportError as exc:
            raise AgentError("runtime_missing", "torch is not installed on the device: {}".format(exc))
        self.torch = torch
        self.module = None
        self.specs: List[dict] = []

    def load(self, path: str, threads: int) -> None:
        import json

        if threads > 0:
            self.torch.set_num_threads(threads)
        extra = {"edgekit_inputs.json": ""}
        try:
            self.module = self.torch.jit.load(path, map_location="cpu", _extra_files=extra)
            self.module.eval()
        except Exception as exc:
            raise AgentError("load_failed", "torch.jit.load cannot load {}: {}".format(path, _one_line(exc)))
        if extra["edgekit_inputs.json"]:
            self.specs = json.loads(extra["edgekit_inputs.json"])
        else:  # forward's signature names the inputs; shapes are unknown without the host's spec
            args = [a.name for a in self.module.forward.schema.arguments[1:]]
            self.specs = [{"name": a, "shape": None, "dtype": "float32"} for a in args]

    def input_specs(self) -> List[dict]:
        return self.specs

    def run(self, feeds):
        import numpy as np

        names = [s["name"] for s in self.specs]
        values = [feeds[n] for n in names] if all(n in feeds for n in names) else list(feeds.values())
        with self.torch.inference_mode():
            out = self.module(*[self.torch.from_numpy(np.ascontiguousarray(v)) for v in values])
        outs = out if isinstance(out, (list, tuple)) else [out]
        return [o.numpy() for o in outs]

    def describe(self) -> dict:
        return {"name": self.name, "version": self.torch.__version__, "threads": self.torch.get_num_threads()}


RUNNERS = {"onnxruntime": OnnxRuntimeRunner, "tflite": LiteRtRunner, "torch": TorchScriptRunner}


def make_runner(name: str, provider: str = "auto") -> Runner:
    cls = RUNNERS.get(name)
    if cls is None:
        raise AgentError("bad_request", "unknown runtime {!r}; this agent knows {}".format(name, ", ".join(sorted(RUNNERS))))
    return cls(provider)


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
    """Inputs files hold calls stacked on a leading axis; benchmarks use the first."""
    return call_feeds(arrays, 0)


def call_feeds(arrays: Dict[str, object], i: int) -> Dict[str, object]:
    """Call `i`'s feeds; a scalar input stays a 0-d array (runtimes refuse numpy scalars)."""
    import numpy as np

    return {k: np.asarray(v[i]) for k, v in arrays.items()}
