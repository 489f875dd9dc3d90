"""Load the user's model and data as the spec describes, and prove they fit together.

Everything is checked before anything is written, so a wrong path or shape costs the user a
one-line error, not a half-filled results store.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import ModelError, one_line
from .settings import InputSpec, ModelSpec


Outputs = list  # one np.ndarray per model output, each stacked over calls: [calls, *per-call shape]


@dataclass
class Dataset:
    """Samples per input name, stacked on that input's batch axis (`axes`, default 0); a scalar
    input stacks to a 1-D array of one value per sample. Labels optional, one per sample."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    axes: dict[str, int] = field(default_factory=dict)
    _digest_memo: tuple[Any, str] | None = field(default=None, init=False, repr=False, compare=False)

    def axis(self, name: str) -> int:
        return self.axes.get(name, 0)

    def __len__(self) -> int:
        name = next(iter(self.inputs))
        return int(self.inputs[name].shape[self.axis(name)])

    def digest(self) -> str:
        """A content hash of the samples (and labels). It keys artifacts and reference outputs, so a
        run asks for it many times: it is computed once for the same array objects (edgekit never
        changes a dataset's arrays in place; replacing one recomputes it)."""
        held = (tuple((k, v) for k, v in self.inputs.items()), self.labels, tuple(sorted(self.axes.items())))
        memo = self._digest_memo
        if memo is not None and _same_arrays(memo[0], held):
            return memo[1]
        digest = self._compute_digest()
        self._digest_memo = (held, digest)
        return digest

    def _compute_digest(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.inputs):
            h.update(name.encode())
            h.update(str(self.axis(name)).encode())
            h.update(np.ascontiguousarray(self.inputs[name]).tobytes())
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()

    def head(self, n: int) -> Dataset:
        labels = None if self.labels is None else self.labels[:n]
        inputs = {k: np.take(v, np.arange(min(n, v.shape[self.axis(k)])), axis=self.axis(k))
                  for k, v in self.inputs.items()}
        return Dataset(inputs, labels, dict(self.axes))


def _same_arrays(a: tuple[Any, Any, Any], b: tuple[Any, Any, Any]) -> bool:
    """The same array objects under the same names, the same labels object, the same axes."""
    (a_inputs, a_labels, a_axes), (b_inputs, b_labels, b_axes) = a, b
    return (a_labels is b_labels and a_axes == b_axes and len(a_inputs) == len(b_inputs)
            and all(ka == kb and va is vb for (ka, va), (kb, vb) in zip(a_inputs, b_inputs)))


def import_entry(ref: str, what: str) -> Callable[..., Any]:
    """`module:function` -> the callable. The working directory is importable, as in pytest."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ModelError(f"{what} {ref!r}: not module:function. Fix: write it as package.module:function")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module raised while importing
        raise ModelError(f"{what} {ref!r}: cannot import {module_name} ({type(exc).__name__}: {one_line(exc)}). "
                         f"Fix: install the package or run from the folder that holds it") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelError(f"{what} {ref!r}: {module_name} has no callable {attr}. Fix: name a function defined there")
    return fn


def load_torch_model(spec: ModelSpec):
    """The model as an eval-mode torch module, or None for an ONNX file (no torch original)."""
    if spec.is_onnx:
        return None
    import torch

    if spec.factory:
        try:
            model = import_entry(spec.factory, "factory")()
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"factory {spec.factory!r} raised {type(exc).__name__}: {one_line(exc)}. "
                             f"Fix: make it return a torch.nn.Module") from None
        if spec.checkpoint is not None:
            try:
                state = torch.load(spec.checkpoint, map_location="cpu", weights_only=True)
                if isinstance(state, dict) and "state_dict" in state:
                    state = state["state_dict"]
                model.load_state_dict(state)
            except Exception as exc:
                raise ModelError(f"checkpoint {spec.checkpoint}: cannot be loaded into the factory's model "
                                 f"({one_line(exc)}). Fix: use a state_dict saved from the same architecture") from None
    else:
        assert spec.path is not None
        model = _load_model_file(spec)
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"model {spec.factory or spec.path}: got {type(model).__name__}, not a torch.nn.Module. "
                         f"Fix: return or save the module itself")
    return model.eval()


def _load_model_file(spec: ModelSpec):
    """A TorchScript file, else a whole-module pickle, which only loads with the user's consent:
    unpickling runs whatever code the file names (PyTorch's own warning on torch.load), so a
    model file from anywhere must never get that far silently."""
    import torch

    path = spec.path
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        jit_error = one_line(exc)
    try:
        held = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain containers only
    except Exception:
        if not _torch_pickle(path):
            raise ModelError(f"model path {path}: not a TorchScript or pickled torch module ({jit_error}). "
                             f"Fix: save it with torch.jit.save, or give an .onnx file") from None
        if not spec.allow_pickle:
            raise ModelError(f"model path {path}: a pickled torch module; loading it runs any code it holds, so "
                             f"edgekit does not without your consent. Fix: if you trust the file, add "
                             f"--allow-pickle (or allow_pickle = true under [model]); better, save it with "
                             f"torch.jit.save or export it to ONNX") from None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ModelError(f"model path {path}: cannot be unpickled as a torch module ({one_line(exc)}). "
                             f"Fix: save it with torch.save(model) or torch.jit.save") from None
    raise ModelError(f"model path {path}: holds {type(held).__name__} (weights), not a module. Fix: give the "
                     f"architecture as factory = \"module:function\" and this file as checkpoint")


# torch.save's legacy (pre-1.6) format opens with the pickled magic number 0x1950a86a20f9469cfc6c.
_LEGACY_TORCH = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def _torch_pickle(path: Path) -> bool:
    """Whether `path` is a torch.save file: a zip holding `*/data.pkl`, or the legacy format."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return any(n == "data.pkl" or n.endswith("/data.pkl") for n in zf.namelist())
        with open(path, "rb") as fh:
            return fh.read(len(_LEGACY_TORCH)) == _LEGACY_TORCH
    except (OSError, zipfile.BadZipFile):
        return False


def example_inputs(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """One call's feeds at the declared shapes; integer inputs drawn from their `values` when given."""
    rng = np.random.default_rng(seed)
    out = {}
    for inp in spec.inputs:
        if inp.values is not None:
            value = rng.choice(np.asarray(inp.values), size=inp.shape)
        elif inp.dtype.startswith("float"):
            value = rng.standard_normal(inp.shape)
        elif inp.dtype == "bool":
            value = rng.integers(0, 2, inp.shape)
        else:
            value = rng.integers(0, 10, inp.shape)
        out[inp.name] = np.asarray(value).astype(inp.dtype)
    return out


def generated_dataset(spec: ModelSpec, seed: int = 0) -> Dataset:
    """One batch of generated inputs as a dataset: when the user gave no data."""
    feeds = example_inputs(spec, seed)
    return stack_feeds([feeds], spec)


def stack_feeds(feeds: list[dict[str, np.ndarray]], spec: ModelSpec) -> Dataset:
    """Calls' feeds back into a dataset (inverse of `batches`)."""
    inputs, axes = {}, {}
    for inp in spec.inputs:
        if inp.scalar:
            inputs[inp.name] = np.stack([np.asarray(f[inp.name]).reshape(()) for f in feeds])
        else:
            inputs[inp.name] = np.concatenate([f[inp.name] for f in feeds], axis=inp.batch_axis)
            axes[inp.name] = inp.batch_axis
    return Dataset(inputs, None, {k: v for k, v in axes.items() if v})


def flatten_outputs(out: Any) -> list[Any]:
    """A model's outputs in a fixed order: tuples/lists in order, dicts by insertion, nested ones flattened."""
    if isinstance(out, (tuple, list)):
        return [leaf for item in out for leaf in flatten_outputs(item)]
    if isinstance(out, dict):
        return [leaf for item in out.values() for leaf in flatten_outputs(item)]
    return [out]


def torch_forward(model, feeds: dict[str, np.ndarray], spec: ModelSpec) -> list[np.ndarray]:
    """Every output of the model for one call, as numpy."""
    import torch

    args = [torch.from_numpy(np.ascontiguousarray(feeds[i.name])) for i in spec.inputs]
    with torch.no_grad():
        out = model(*args)
    return [o.detach().cpu().numpy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in flatten_outputs(out)]


def check_model_accepts_inputs(model, spec: ModelSpec) -> None:
    """Run one forward pass on the declared shapes so a wrong shape fails here, in one line."""
    if model is None:
        return
    shapes = ", ".join(f"{i.name}{list(i.shape)}" for i in spec.inputs)
    try:
        torch_forward(model, example_inputs(spec), spec)
    except Exception as exc:
        raise ModelError(f"model {spec.name} rejects the declared input {shapes} ({one_line(exc)}). "
                         f"Fix: set [model] inputs to the shape the model expects") from None


def load_data(ref: str | None, spec: ModelSpec, what: str) -> Dataset | None:
    """Data from an entry point or an .npz/.npy file, checked against the input spec."""
    if ref is None:
        return None
    if ref.endswith((".npz", ".npy")) and Path(ref).is_file():
        try:
            raw: Any = np.load(ref, allow_pickle=False)
            if isinstance(raw, np.lib.npyio.NpzFile):
                raw = {k: raw[k] for k in raw.files}
        except (ValueError, OSError, EOFError) as exc:
            raise ModelError(f"[data] {what} {ref}: not a plain numeric .npz/.npy ({one_line(exc)}). "
                             f"Fix: save it with np.savez(path, name=array) from numeric arrays") from None
    else:
        try:
            raw = import_entry(ref, f"[data] {what}")()
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"[data] {what} {ref!r} raised {type(exc).__name__}: {one_line(exc)}. "
                             f"Fix: make it return arrays or (inputs, labels)") from None
    return _to_dataset(raw, spec, f"[data] {what} ({ref})")


def _to_dataset(raw: Any, spec: ModelSpec, where: str) -> Dataset:
    labels = None
    if isinstance(raw, tuple) and len(raw) == 2:
        raw, labels = raw
    if isinstance(raw, dict):
        raw = dict(raw)
        labels = raw.pop("labels", labels)
        inputs = raw
    elif len(spec.inputs) == 1:
        inputs = {spec.inputs[0].name: raw}
    else:
        raise ModelError(f"{where}: the model has {len(spec.inputs)} inputs, so the data must be a dict "
                         f"keyed by input name. Fix: return {{name: array}}")
    unknown = sorted(set(inputs) - {i.name for i in spec.inputs})
    if unknown:
        raise ModelError(f"{where}: array {unknown[0]!r} is not a model input. Fix: name arrays after the inputs "
                         f"({', '.join(i.name for i in spec.inputs)}), labels as 'labels'")
    out: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for inp in spec.inputs:
        if inp.name not in inputs:
            raise ModelError(f"{where}: no array for input {inp.name!r}. Fix: add it (keys: {sorted(inputs)})")
        arr = _checked_array(inputs[inp.name], inp, where)
        out[inp.name] = arr
        counts[inp.name] = arr.shape[0 if inp.scalar else inp.batch_axis]
    n = set(counts.values())
    if len(n) != 1 or 0 in n:
        raise ModelError(f"{where}: inputs have different or zero sample counts "
                         f"({', '.join(f'{k}: {v}' for k, v in counts.items())}). "
                         f"Fix: stack the same samples for every input")
    count = n.pop()
    if count < spec.batch_size:
        raise ModelError(f"{where}: {count} samples, fewer than one batch of {spec.batch_size}. "
                         f"Fix: give at least {spec.batch_size} samples")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.dtype == object or len(labels) != count:
            raise ModelError(f"{where}: {len(labels)} labels for {count} samples. Fix: one label per sample")
    axes = {i.name: i.batch_axis for i in spec.inputs if not i.scalar and i.batch_axis}
    return Dataset(out, labels, axes)


def _checked_array(value: Any, inp: InputSpec, where: str) -> np.ndarray:
    """The array for one input: right sample shape, castable to the input's dtype, finite."""
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ModelError(f"{where}: {inp.name!r} holds {arr.dtype} values, not numbers. "
                         f"Fix: save a numeric array (np.savez(..., {inp.name}=array))")
    if inp.scalar:
        if arr.ndim != 1:
            raise ModelError(f"{where}: {inp.name!r} is a scalar input, so its samples stack to a 1-D array; got "
                             f"shape {list(arr.shape)}. Fix: save one value per sample, shape [N]")
    else:
        axis = inp.batch_axis
        sample = list(inp.sample_shape)
        got = list(arr.shape[:axis]) + list(arr.shape[axis + 1:]) if arr.ndim == len(inp.shape) else None
        if got != sample:
            want = list(inp.shape)
            want[axis] = "N"  # type: ignore[call-overload]
            raise ModelError(f"{where}: samples for {inp.name!r} have shape {list(arr.shape)}, the model input is "
                             f"{list(inp.shape)} with samples on axis {axis}. Fix: stack samples as "
                             f"[{', '.join(map(str, want))}]")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ModelError(f"{where}: {inp.name!r} holds {int((~np.isfinite(arr)).sum())} NaN or infinite values. "
                         f"Fix: clean the data; parity on non-finite inputs proves nothing")
    target = np.dtype(inp.dtype)
    if target.kind in "biu" and arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
        raise ModelError(f"{where}: {inp.name!r} is a {inp.dtype} input but the data holds fractions. "
                         f"Fix: save integer values")
    return arr.astype(target, copy=False)


def batches(data: Dataset, spec: ModelSpec) -> Iterator[dict[str, np.ndarray]]:
    """One call's feeds at a time, at the declared shapes: `batch_size` samples sliced on each
    input's batch axis; a scalar input takes the value of the call's first sample. A tail shorter
    than a batch is dropped."""
    batch = spec.batch_size
    for start in range(0, len(data) - batch + 1, batch):
        feeds = {}
        for inp in spec.inputs:
            arr = data.inputs[inp.name]
            if inp.scalar:
                feeds[inp.name] = np.asarray(arr[start])
            else:
                axis = data.axis(inp.name)
                feeds[inp.name] = np.take(arr, np.arange(start, start + batch), axis=axis)
        yield feeds


def stack_outputs(per_call: list[list[Any]], what: str = "the model") -> Outputs:
    """Per-call output lists -> one array per output, stacked over calls."""
    if not per_call:
        return []
    counts = {len(c) for c in per_call}
    if len(counts) != 1:
        raise ModelError(f"{what} returned a different number of outputs per call ({sorted(counts)})")
    stacked = []
    for j in range(counts.pop()):
        arrays = [np.asarray(c[j]) for c in per_call]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ModelError(f"{what}: output {j} changes shape between calls ({sorted(shapes)[:3]}); edgekit "
                             f"compares outputs of a fixed shape. Fix: declare inputs that give fixed-size outputs")
        stacked.append(np.stack(arrays))
    return stacked


def reference_outputs(model, data: Dataset, spec: ModelSpec) -> Outputs:
    """The original model's outputs on `data`, the yardstick for every variant."""
    return stack_outputs([torch_forward(model, feeds, spec) for feeds in batches(data, spec)])


def weights_digest(model) -> str:
    """A hash of the parameters and buffers, so the artifact cache notices retraining."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
