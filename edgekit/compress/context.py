"""What every builder receives: the model, its spec and data, prepared once per compress run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..model import Dataset
from ..spec import ModelSpec, TechniqueSettings


@dataclass
class BuildContext:
    spec: ModelSpec
    model: object | None  # eval-mode torch module; None when the user gave an ONNX file
    model_digest: str  # hash of the weights (or of the ONNX file)
    calibration: Dataset | None
    evaluation: Dataset | None
    reference: list[np.ndarray] | None  # the original model's outputs on `evaluation`, one array per output
    isa: tuple[str, ...] | None = None  # the target's `cpu.isa` from its probe, when known
    max_accuracy_drop: float | None = None  # the profile's budget: flags variants, drives onnx:int8-mixed
    # technique steps (issue 7): the profile's [techniques] defaults; training data loaded on first use
    techniques: TechniqueSettings = field(default_factory=TechniqueSettings)
    training: Dataset | None = None
    metric: Callable[..., float] | None = None  # the spec's [data] metric, imported once
    output_names: tuple[str, ...] = ()  # the original's output names where it has them (an ONNX graph)

    def compare(self, outputs: list[np.ndarray], reference: list[np.ndarray] | None = None,
                data: Dataset | None = None) -> dict[str, Any]:
        """Parity of `outputs` against the original on `data` (default: the evaluation set), with
        the spec's task and metric: the one comparison every stage uses."""
        from .parity import compare

        data = data if data is not None else self.evaluation
        reference = reference if reference is not None else self.reference
        return compare(outputs, reference, data.labels if data is not None else None, self.spec.task, self.metric,
                       self.output_names)
