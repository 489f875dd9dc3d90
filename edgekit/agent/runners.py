"""THE runner table: runtime name -> the class that loads an artifact, describes its inputs and
runs it. The agent benchmarks through it, the probe lists it, and the host computes parity
through it too, so a device measurement and a host parity figure come from the same code.

Every runner returns every output of the model, as numpy arrays in the artifact's output order
(nested tuples/lists/dicts flattened depth first, dicts in insertion order: torch's pytree order,
which torch.export and the ONNX exporter use as well).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

from .protocol import AgentError


class Runner:
    name = ""

    @classmethod
    def probe(cls) -> Optional[dict]:
        """What the device's probe says about this runtime without loading a model: None when it is
        not installed, {"error": ...} when it is installed but does not import. Cheap: no heavy imports."""
        return None

    def load(self, path: str, threads: int) -> None:
        raise NotImplementedError

    def input_specs(self) -> Optional[List[dict]]:
        """[{name, shape, dtype}] with any dynamic dimension given as 1; a shape is None where the
        artifact does not record it, and the whole list None where it does not say what it takes."""
        raise NotImplementedError

    def output_names(self) -> List[str]:
        """The outputs' names where the format keeps them (for error messages), else []."""
        return []

    def run(self, feeds: Dict[str, object]) -> List[object]:
        """Every output for one call. `feeds` are matched by name, else by position."""
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    def bind(self, feeds: Dict[str, object]) -> Callable[[], object]:
        """A zero-argument call running one inference on `feeds`: what the measured loop times."""
        return lambda: self.run(feeds)


def _installed(dists: Sequence[str], modules: Sequence[str]) -> Optional[tuple]:
    """(distribution, version) of the first installed one, (None, None) for a module importable
    without metadata (a source build), else None. Finds; does not import."""
    for dist in dists:
        version = _dist_version(dist)
        if version:
            return dist, version
    import importlib.util

    for module in modules:
        try:
            if importlib.util.find_spec(module) is not None:
                return None, None
        except (ImportError, ValueError):
            continue
    return None


def _ordered(names: List[str], feeds: Dict[str, object], what: str,
             match: Optional[Callable[[str, Dict[str, object]], Optional[str]]] = None) -> list:
    """The feed for each model input: by exact name, else by `match` (converter name mangling),
    else by position when the counts agree (the host sends its spec's inputs in order)."""
    if all(n in feeds for n in names):
        return [feeds[n] for n in names]
    if match is not None:
        keys = [match(n, feeds) for n in names]
        if None not in keys and len(set(keys)) == len(keys):
            return [feeds[k] for k in keys]
    if len(feeds) == len(names):
        return list(feeds.values())
    raise AgentError("bad_request", "inputs {} do not match the {} model's {}".format(sorted(feeds), what, names))


# ONNX type strings -> numpy dtype names
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(uint16)": "uint16",
             "tensor(int32)": "int32", "tensor(uint32)": "uint32", "tensor(int64)": "int64",
             "tensor(uint64)": "uint64", "tensor(bool)": "bool"}


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime. `provider`: "auto" (CUDA / TensorRT when present, else CPU), "cpu", "cuda",
    "tensorrt", or a full provider name; forcing one the device lacks is a runtime_missing error.
    Feeds are cast to each input's own type (float16 inputs of an fp16 model without kept I/O
    types, int32 data for an int64 input): ONNX Runtime refuses a mismatch instead of converting."""

    name = "onnxruntime"
    SHORT = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}

    @classmethod
    def probe(cls) -> Optional[dict]:
        found = _installed(("onnxruntime", "onnxruntime-gpu"), ("onnxruntime",))
        if found is None:
            return None
        entry = {"version": found[1], "package": found[0]}
        try:
            import onnxruntime

            entry["version"] = entry["version"] or onnxruntime.__version__
            entry["providers"] = onnxruntime.get_available_providers()
        except Exception as exc:  # installed but broken (e.g. numpy ABI): say so
            entry["error"] = _one_line(exc)[:200]
        return entry

    def __init__(self, provider: str = "auto") -> None:
        self.provider = provider
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise AgentError("runtime_missing", "onnxruntime is not installed on the device "
                             "(pip install onnxruntime): {}".format(exc))
        self.ort = ort
        self.session = None
        self.inputs: List[tuple] = []

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
        self.inputs = [(i.name, ORT_TYPES.get(i.type)) for i in self.session.get_inputs()]

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
        return [{"name": i.name, "shape": [d if isinstance(d, int) and d > 0 else 1 for d in i.shape],
                 "dtype": ORT_TYPES.get(i.type, "float32")} for i in self.session.get_inputs()]

    def output_names(self) -> List[str]:
        return [o.name for o in self.session.get_outputs()]

    def feeds(self, feeds: Dict[str, object]) -> Dict[str, object]:
        """`feeds` keyed by the session's input names, each in the input's own dtype."""
        import numpy as np

        values = _ordered([n for n, _ in self.inputs], feeds, "ONNX")
        out = {}
        for (name, dtype), value in zip(self.inputs, values):
            value = np.asarray(value)
            out[name] = value.astype(dtype) if dtype is not None and value.dtype != dtype else value
        return out

    def run(self, feeds):
        return self.session.run(None, self.feeds(feeds))

    def bind(self, feeds):
        import functools

        return functools.partial(self.session.run, None, self.feeds(feeds))

    def describe(self) -> dict:
        return {"name": self.name, "version": self.ort.__version__,
                "providers": self.session.get_providers() if self.session else self.ort.get_available_providers()}


LITERT = (("ai_edge_litert.interpreter", "ai-edge-litert"), ("tflite_runtime.interpreter", "tflite-runtime"),
          ("tensorflow.lite", "tensorflow"))


def _import_litert(light: bool = False):
    """(Interpreter class, package, version): ai_edge_litert, else tflite_runtime, else tensorflow.lite
    (skipped when `light`: importing TensorFlow takes seconds)."""
    tried = []
    for module, dist in LITERT[:2] if light else LITERT:
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


def _tflite_name(name: str, feeds: Dict[str, object]) -> Optional[str]:
    """The feed a converter-mangled input name stands for: `serving_default_x:0` -> `x`. The name
    less its `:N` suffix must be the feed's name or end in `_`, `/` or `.` and it, so `x` does not
    capture `serving_default_max:0` and `a` not every `serving_default_*`; the longest match wins."""
    base, _, index = name.rpartition(":")
    if not base or not index.isdigit():
        base = name
    inside = [k for k in feeds if base == k or any(base.endswith(sep + k) for sep in ("_", "/", "."))]
    return max(inside, key=len) if inside else None


class LiteRtRunner(Runner):
    """LiteRT / TFLite. XNNPACK is the interpreter's default CPU delegate; quantized inputs are
    quantized from float feeds and quantized outputs dequantized, with each tensor's scale/zero point.
    Inputs go by name, by the converter's mangled name, else by position."""

    name = "tflite"

    @classmethod
    def probe(cls) -> Optional[dict]:
        found = _installed([d for _, d in LITERT], ("ai_edge_litert", "tflite_runtime"))
        if found is None:
            return None
        if found[0] == "tensorflow":  # importing it to check would cost seconds
            return {"version": found[1], "package": found[0], "delegate": "default"}
        try:
            _, package, version = _import_litert(light=True)
        except AgentError as exc:
            return {"version": found[1], "package": found[0], "error": exc.message[:200]}
        return {"version": version, "package": package, "delegate": _litert_delegate(package)}

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
        self._details()

    def _details(self) -> None:
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

    def output_names(self) -> List[str]:
        return [d["name"] for d in self.outputs]

    def run(self, feeds):
        import numpy as np

        values = [np.asarray(v) for v in _ordered([d["name"] for d in self.inputs], feeds, "TFLite", _tflite_name)]
        self._fit(values)
        for d, value in zip(self.inputs, values):
            self.interp.set_tensor(d["index"], quantize(value, d).reshape(d["shape"]))
        self.interp.invoke()
        return [dequantize(self.interp.get_tensor(d["index"]), d) for d in self.outputs]

    def _fit(self, values) -> None:
        """Resize inputs whose dynamic dimensions differ from the feeds (a new batch size)."""
        resized = False
        for d, value in zip(self.inputs, values):
            shape = [int(x) for x in d["shape"]]
            if list(value.shape) != shape and value.size != _size(shape):
                self.interp.resize_tensor_input(d["index"], list(value.shape))
                resized = True
        if resized:
            self.interp.allocate_tensors()
            self._details()

    def describe(self) -> dict:
        return {"name": self.name, "package": self.package, "version": self.version, "threads": self.threads,
                "delegate": _litert_delegate(self.package)}


def _litert_delegate(package: str) -> str:
    return "xnnpack (interpreter default)" if package == "ai-edge-litert" else "default"


def _size(shape) -> int:
    n = 1
    for x in shape:
        n *= int(x)
    return n


def _quant(detail) -> Optional[tuple]:
    """(scale, zero point) of an integer tensor with per-tensor quantization, else None."""
    scale, zero = detail.get("quantization", (0.0, 0))
    if scale and getattr(detail["dtype"], "__name__", "") in ("int8", "uint8", "int16"):
        return float(scale), int(zero)
    return None


def quantize(value, detail: dict):
    """A feed in the tensor's dtype; float data for a quantized tensor is quantized with its own
    scale and zero point (round half to even, clipped to the type's range)."""
    import numpy as np

    value = np.asarray(value)
    q = _quant(detail)
    if q is not None and value.dtype.kind == "f":
        scale, zero = q
        info = np.iinfo(detail["dtype"])
        value = np.clip(np.round(value / scale) + zero, info.min, info.max)
    return value.astype(detail["dtype"], copy=False)


def dequantize(value, detail: dict):
    """A quantized output as float32 (scale x (q - zero point)); any other output as it is."""
    import numpy as np

    q = _quant(detail)
    return (np.asarray(value).astype(np.float32) - q[1]) * q[0] if q is not None else value


def _leaves(value) -> list:
    """Tensors of a nested output, depth first, dicts in insertion order (torch's pytree order)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            out.extend(_leaves(v))
        return out
    return [] if value is None else [value]


def _numpy(value):
    """A torch tensor (bfloat16 widened: numpy has none) or a Python scalar as numpy."""
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _tensors(torch, values) -> list:
    import numpy as np

    return [torch.from_numpy(np.ascontiguousarray(v)) for v in values]


class TorchScriptRunner(Runner):
    """TorchScript through torch.jit.load on the CPU."""

    name = "torch"

    @classmethod
    def probe(cls) -> Optional[dict]:
        found = _installed(("torch",), ("torch",))  # importing torch takes seconds on a small board
        return None if found is None else {"version": found[1], "package": "torch"}

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
        values = _ordered([s["name"] for s in self.specs], feeds, "TorchScript")
        with self.torch.inference_mode():
            out = self.module(*_tensors(self.torch, values))
        return [_numpy(o) for o in _leaves(out)]

    def describe(self) -> dict:
        return {"name": self.name, "version": self.torch.__version__, "threads": self.torch.get_num_threads()}


# c10::ScalarType codes, as ExecuTorch's TensorInfo.dtype() returns them
ET_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
             7: "float64", 11: "bool", 15: "bfloat16"}


class ExecuTorchRunner(Runner):
    """ExecuTorch's Python runtime (`executorch.runtime`, which imports torch), method "forward".
    Input shapes and dtypes come from the program's method metadata; a .pte has no input names,
    so inputs are called input_0, input_1, ... and fed by position."""

    name = "executorch"

    @classmethod
    def probe(cls) -> Optional[dict]:
        found = _installed(("executorch",), ("executorch",))
        if found is None:
            return None
        entry = {"version": found[1], "package": "executorch"}
        if _installed(("torch",), ("torch",)) is None:
            entry["error"] = "executorch's Python runtime imports torch, which is not installed"
        return entry

    def __init__(self, provider: str = "auto") -> None:
        try:
            import torch
            from executorch.runtime import Runtime
        except ImportError as exc:
            raise AgentError("runtime_missing", "the ExecuTorch runtime is not installed on the device "
                             "(pip install executorch; it needs torch): {}".format(_one_line(exc)))
        self.torch = torch
        self.runtime = Runtime.get()
        self.method = None
        self.specs: Optional[List[dict]] = None
        self.threads = 0

    def load(self, path: str, threads: int) -> None:
        if threads > 0:  # XNNPACK's one process-wide threadpool
            try:
                from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

                _unsafe_reset_threadpool(threads)
                self.threads = threads
            except Exception:
                pass
        try:
            program = self.runtime.load_program(path)
            self.method = program.load_method("forward")
        except Exception as exc:
            raise AgentError("load_failed", "executorch cannot load {}: {}".format(path, _one_line(exc)))
        self.program = program
        self.specs = self._specs()

    def _specs(self) -> Optional[List[dict]]:
        try:
            meta = self.method.metadata
            infos = [meta.input_tensor_meta(i) for i in range(meta.num_inputs())]
        except Exception:  # a runtime without method metadata: the host must send inputs
            return None
        return [{"name": "input_{}".format(i), "shape": [int(x) for x in info.sizes()],
                 "dtype": ET_DTYPES.get(int(info.dtype()), "float32")} for i, info in enumerate(infos)]

    def input_specs(self) -> Optional[List[dict]]:
        return self.specs

    def run(self, feeds):
        values = list(feeds.values()) if self.specs is None else \
            _ordered([s["name"] for s in self.specs], feeds, "ExecuTorch")
        out = self.method.execute(_tensors(self.torch, values))
        return [_numpy(o) for o in _leaves(list(out))]

    def describe(self) -> dict:
        try:
            backends = list(self.runtime.backend_registry.registered_backend_names)
        except Exception:
            backends = None
        return {"name": self.name, "version": _dist_version("executorch"), "backends": backends,
                "threads": self.threads or None}


RUNNERS = {r.name: r for r in (OnnxRuntimeRunner, LiteRtRunner, TorchScriptRunner, ExecuTorchRunner)}


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
