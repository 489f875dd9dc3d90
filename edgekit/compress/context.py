"""What every builder receives: the model, its spec and data, prepared once per compress run."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    reference: np.ndarray | None  # the original model's outputs on `evaluation`
    isa: tuple[str, ...] | None = None  # the target's `cpu.isa` from its probe, when known
    max_accuracy_drop: float | None = None  # the profile's budget: flags variants, drives onnx:int8-mixed
    # technique steps (issue 7): the profile's [techniques] defaults; training data loaded on first use
    techniques: TechniqueSettings = field(default_factory=TechniqueSettings)
    training: Dataset | None = None
