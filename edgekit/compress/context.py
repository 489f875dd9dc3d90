"""What every builder receives: the model, its spec and data, prepared once per compress run."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..model import Dataset
from ..settings import ModelSpec, TechniqueSettings


class LazyModel:
    """A torch model loaded on first use, so a warm run whose artifacts and reference outputs are
    all cached never imports torch for it. `load` must give the weights `digest` the artifact keys
    were computed with; a model that does not is refused rather than built under the wrong key."""

    def __init__(self, load: Callable[[], object], digest: str, mismatch: Callable[[str], Exception]) -> None:
        self._load, self._digest, self._mismatch = load, digest, mismatch
        self._lock = threading.Lock()  # fleet runs share one context across device threads
        self._model: object | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> object:
        with self._lock:
            if self._model is None:
                from ..model import weights_digest

                model = self._load()
                got = weights_digest(model)
                if got != self._digest:
                    raise self._mismatch(got)
                self._model = model
            return self._model


class _ModelField:
    """The `model` field: reading it loads a `LazyModel`; the instance's __dict__ keeps the holder,
    so copies made from it (`BuildContext(**ctx.__dict__)`, `ctx.replace`) share one load."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, objtype: type | None = None) -> object:
        if obj is None:
            raise AttributeError(self.name)  # dataclasses: the field has no default
        value = obj.__dict__[self.name]
        return value.get() if isinstance(value, LazyModel) else value

    def __set__(self, obj: object, value: object) -> None:
        obj.__dict__[self.name] = value


@dataclass
class BuildContext:
    spec: ModelSpec
    # eval-mode torch module (a LazyModel until first read); None when the user gave an ONNX file
    model: object | None = _ModelField()  # type: ignore[assignment]
    model_digest: str  # hash of the weights (or of the ONNX file)
    calibration: Dataset | None
    evaluation: Dataset | None
    reference: list[np.ndarray] | None  # the original model's outputs on `evaluation`, one array per output
    isa: tuple[str, ...] | None = None  # the target's `cpu.isa` from its probe, when known
    max_accuracy_drop: float | None = None  # the profile's budget: flags variants, drives onnx:int8-mixed
    # technique steps: the profile's [techniques] defaults; training data loaded on first use
    techniques: TechniqueSettings = field(default_factory=TechniqueSettings)
    training: Dataset | None = None
    metric: Callable[..., float] | None = None  # the spec's [data] metric, imported once
    output_names: tuple[str, ...] = ()  # the original's output names where it has them (an ONNX graph)
    cached: tuple[str, ...] = ()  # what `prepare` took from the derived cache instead of computing it

    @property
    def model_loaded(self) -> bool:
        """Whether the torch model is in memory (False for ONNX and for a model not needed yet)."""
        value = self.__dict__["model"]
        return value.loaded if isinstance(value, LazyModel) else value is not None

    def replace(self, **changes: Any) -> BuildContext:
        """`dataclasses.replace` that leaves a model not loaded yet not loaded."""
        return dataclasses.replace(self, **{"model": self.__dict__["model"], **changes})

    def compare(self, outputs: list[np.ndarray], reference: list[np.ndarray] | None = None,
                data: Dataset | None = None) -> dict[str, Any]:
        """Parity of `outputs` against the original on `data` (default: the evaluation set), with
        the spec's task and metric: the one comparison every stage uses."""
        from .parity import compare

        data = data if data is not None else self.evaluation
        reference = reference if reference is not None else self.reference
        return compare(outputs, reference, data.labels if data is not None else None, self.spec.task, self.metric,
                       self.output_names)
