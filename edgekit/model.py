"""Load the user's model and data as the spec describes, and prove they fit together.

Everything is checked before anything is written, so a wrong path or shape costs the user a
one-line error, not a half-filled results store.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import ModelError
from .spec import InputSpec, ModelSpec


@dataclass
class Dataset:
    """Samples stacked along axis 0 per input name; labels optional."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def digest(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.inputs):
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.inputs[name]).tobytes())
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()

    def head(self, n: int) -> Dataset:
        labels = None if self.labels is None else self.labels[:n]
        return Dataset({k: v[:n] for k, v in self.inputs.items()}, labels)


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
        raise ModelError(f"{what} {ref!r}: cannot import {module_name} ({type(exc).__name__}: {_one_line(exc)}). "
                         f"Fix: install the package or run from the folder that holds it") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelError(f"{what} {ref!r}: {module_name} has no callable {attr}. Fix: name a function defined there")
    return fn


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def load_torch_model(spec: ModelSpec):
    """The model as an eval-mode torch module, or None for an ONNX file (no torch original)."""
    import torch

    if spec.is_onnx:
        return None
    if spec.factory:
        try:
            model = import_entry(spec.factory, "factory")()
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"factory {spec.factory!r} raised {type(exc).__name__}: {_one_line(exc)}. "
                             f"Fix: make it return a torch.nn.Module") from None
        if spec.checkpoint is not None:
            try:
                state = torch.load(spec.checkpoint, map_location="cpu", weights_only=True)
                if isinstance(state, dict) and "state_dict" in state:
                    state = state["state_dict"]
                model.load_state_dict(state)
            except Exception as exc:
                raise ModelError(f"checkpoint {spec.checkpoint}: cannot be loaded into the factory's model "
                                 f"({_one_line(exc)}). Fix: use a state_dict saved from the same architecture") from None
    else:
        assert spec.path is not None
        try:
            try:
                model = torch.jit.load(str(spec.path), map_location="cpu")
            except Exception:
                model = torch.load(spec.path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ModelError(f"model path {spec.path}: not a TorchScript or pickled torch module "
                             f"({_one_line(exc)}). Fix: save it with torch.save(model) or torch.jit.save") from None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"model {spec.factory or spec.path}: got {type(model).__name__}, not a torch.nn.Module. "
                         f"Fix: return or save the module itself")
    return model.eval()


def example_inputs(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for inp in spec.inputs:
        if inp.dtype.startswith("float"):
            out[inp.name] = rng.standard_normal(inp.shape).astype(inp.dtype)
        else:
            out[inp.name] = rng.integers(0, 10, inp.shape).astype(inp.dtype)
    return out


def torch_forward(model, feeds: dict[str, np.ndarray], spec: ModelSpec) -> np.ndarray:
    """The first output of the model for one batch, as numpy."""
    import torch

    args = [torch.from_numpy(np.ascontiguousarray(feeds[i.name])) for i in spec.inputs]
    with torch.no_grad():
        out = model(*args)
    if isinstance(out, (tuple, list)):
        out = out[0]
    elif isinstance(out, dict):
        out = next(iter(out.values()))
    return out.detach().cpu().numpy()


def check_model_accepts_inputs(model, spec: ModelSpec) -> None:
    """Run one forward pass on the declared shapes so a wrong shape fails here, in one line."""
    if model is None:
        return
    shapes = ", ".join(f"{i.name}{list(i.shape)}" for i in spec.inputs)
    try:
        torch_forward(model, example_inputs(spec), spec)
    except Exception as exc:
        raise ModelError(f"model {spec.name} rejects the declared input {shapes} ({_one_line(exc)}). "
                         f"Fix: set [model] inputs to the shape the model expects") from None


def load_data(ref: str | None, spec: ModelSpec, what: str) -> Dataset | None:
    """Data from an entry point or an .npz/.npy file, checked against the input spec."""
    if ref is None:
        return None
    if ref.endswith((".npz", ".npy")) and Path(ref).is_file():
        raw: Any = np.load(ref, allow_pickle=False)
        if isinstance(raw, np.lib.npyio.NpzFile):
            raw = {k: raw[k] for k in raw.files}
    else:
        try:
            raw = import_entry(ref, f"[data] {what}")()
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"[data] {what} {ref!r} raised {type(exc).__name__}: {_one_line(exc)}. "
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
    out: dict[str, np.ndarray] = {}
    for inp in spec.inputs:
        if inp.name not in inputs:
            raise ModelError(f"{where}: no array for input {inp.name!r}. Fix: add it (keys: {sorted(inputs)})")
        arr = np.asarray(inputs[inp.name])
        out[inp.name] = _match_sample_shape(arr, inp, where).astype(inp.dtype, copy=False)
    n = {len(a) for a in out.values()}
    if len(n) != 1 or 0 in n:
        raise ModelError(f"{where}: inputs have different or zero sample counts {sorted(n)}. Fix: stack the same samples for every input")
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != n.pop():
            raise ModelError(f"{where}: {len(labels)} labels for a different number of samples. Fix: one label per sample")
    return Dataset(out, labels)


def _match_sample_shape(arr: np.ndarray, inp: InputSpec, where: str) -> np.ndarray:
    sample = tuple(inp.shape[1:])
    if arr.shape[1:] == sample:
        return arr
    raise ModelError(f"{where}: samples for {inp.name!r} have shape {list(arr.shape[1:])}, the model input is "
                     f"{list(inp.shape)} (batch first). Fix: stack samples as [N, {', '.join(map(str, sample))}]")


def batches(data: Dataset, spec: ModelSpec) -> Iterator[dict[str, np.ndarray]]:
    """Feeds at the spec's batch size; a tail shorter than a batch is dropped."""
    batch = spec.inputs[0].shape[0]
    for start in range(0, len(data) - batch + 1, batch):
        yield {k: v[start:start + batch] for k, v in data.inputs.items()}


def reference_outputs(model, data: Dataset, spec: ModelSpec) -> np.ndarray:
    """The original model's outputs on `data`, the yardstick for every variant."""
    return np.concatenate([torch_forward(model, feeds, spec) for feeds in batches(data, spec)])


def weights_digest(model) -> str:
    """A hash of the parameters and buffers, so the artifact cache notices retraining."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
