"""The settings every stage is handed: what the model is, where it runs, how to measure and choose.

Plain frozen dataclasses and the vocabularies they draw on, with no edgekit imports, so any
module (the loaders in config.py, compress, the pipeline) can take them without pulling in more.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")
OBJECTIVES = ("p50_ms", "p90_ms", "p99_ms", "size_bytes", "peak_rss_mb", "energy_mj")
# fidelity constraints (judged on the evaluation data) and device/artifact constraints
FIDELITY = ("max_accuracy_drop", "min_top1_agreement", "min_cosine", "max_abs_diff", "max_metric_drop")
CONSTRAINTS = FIDELITY + ("max_peak_rss_mb", "max_p90_ms", "max_size_mb")
TASKS = ("classification",)
TRANSPORTS = ("local", "ssh")


@dataclass(frozen=True)
class InputSpec:
    """One model input as the model is called: `shape = ()` is a scalar; `batch_axis` says where
    samples stack (a recurrent state is often [layers, batch, hidden], batch on axis 1). `values`
    lists the valid values of an integer input (a sample rate, a token id range) for generated feeds."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    batch_axis: int = 0
    values: tuple[Any, ...] | None = None

    @property
    def scalar(self) -> bool:
        return len(self.shape) == 0

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one call's input without its batch dimension."""
        if self.scalar:
            return ()
        return self.shape[:self.batch_axis] + self.shape[self.batch_axis + 1:]

    @property
    def batch(self) -> int | None:
        return None if self.scalar else self.shape[self.batch_axis]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.batch_axis:
            out["batch_axis"] = self.batch_axis
        if self.values is not None:
            out["values"] = list(self.values)
        return out


@dataclass(frozen=True)
class ModelSpec:
    """Where the model and its data come from. Exactly one of `factory` or `path` is set."""

    name: str
    inputs: tuple[InputSpec, ...]
    factory: str | None = None
    checkpoint: Path | None = None
    path: Path | None = None
    calibration: str | None = None
    evaluation: str | None = None
    training: str | None = None
    source: str = "flags"
    dynamic_batch: bool = False  # export ONNX with a symbolic batch dimension (shape[0] is the example)
    task: str | None = None  # "classification": the first output is class scores (top-1, label accuracy)
    metric: str | None = None  # module:function(reference, outputs, labels) -> float, higher is better
    allow_pickle: bool = False  # a whole-module pickle at `path` may be unpickled (runs its code)

    @property
    def is_onnx(self) -> bool:
        return self.path is not None and self.path.suffix == ".onnx"

    @property
    def batch_size(self) -> int:
        """Samples per call: the batch dimension of the first input that has one (1 if all are scalars)."""
        return next((i.batch for i in self.inputs if i.batch is not None), 1)


@dataclass(frozen=True)
class Target:
    name: str
    transport: str = "ssh"
    host: str | None = None
    user: str | None = None
    port: int | None = None
    python: str | None = None
    workdir: str = "~/.edgekit"
    arch: str | None = None
    runtimes: tuple[str, ...] = ()
    power: str | None = None
    sensor_root: str | None = None
    notes: str = ""
    source: str = ""
    connect_timeout: float = 10.0  # seconds for TCP connect and the SSH handshake


@dataclass(frozen=True)
class BenchSettings:
    warmup_s: float = 0.5
    min_runs: int = 50
    min_s: float = 1.0
    max_s: float = 30.0
    threads: int = 0  # 0: the runtime's default
    max_runs: int = 20000  # bounds the samples kept for very fast models
    power: str = "auto"  # auto | off | a sensor name (edgekit.agent.power.NAMES)
    cooldown_c: float | None = None  # wait until the hottest thermal zone is at most this
    rate_hz: float | None = None  # call at a fixed rate (a camera) instead of back to back
    parity_samples: int = 64  # evaluation samples run on the device to compare with the host (0: skip)
    rounds: int = 3  # interleaved rounds per ranking: each round one fresh agent process per variant

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SelectSettings:
    objective: str = "p90_ms"
    constraints: dict[str, float] = field(default_factory=dict)


IMPORTANCES = ("l1", "l2", "taylor")
AUGMENTS = ("none", "shift", "affine")  # technique training: how each image is transformed when used
SCHEDULES = ("constant", "cosine")  # technique training: learning rate over the epochs


@dataclass(frozen=True)
class TechniqueSettings:
    """Defaults for technique steps (prune, merge, sparsity, cluster, kd); a step's inline options win.

    `epochs`/`lr` drive the fine-tuning after each step on `[data] training` (and the kd run and
    its no-teacher baseline); `merge` fine-tunes only with an inline `epochs=N`, since its point is
    accuracy without data. `ignore` names modules pruning and merging leave alone, on top of the
    classifier head, which is always kept so the outputs keep their meaning. `augment` (image
    inputs only) transforms each training image afresh every time it is used: `shift` moves it by
    up to 2 pixels, `affine` also rotates (up to 10 degrees) and scales (0.9..1.1). In kd the
    teacher labels the transformed image. `schedule` = "cosine" anneals the learning rate to 0.
    """

    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    importance: str = "l2"
    iterations: int = 1
    ignore: tuple[str, ...] = ()
    temperature: float = 4.0
    alpha: float = 0.9
    student: str | None = None  # module:function building an untrained student for kd
    augment: str = "none"  # one of AUGMENTS
    schedule: str = "constant"  # one of SCHEDULES

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ignore": list(self.ignore)}


@dataclass(frozen=True)
class Profile:
    name: str
    recipes: tuple[str, ...]
    bench: BenchSettings
    select: SelectSettings
    source: str = ""
    techniques: TechniqueSettings = field(default_factory=TechniqueSettings)




def default_python(target: Target) -> str:
    """The interpreter that runs the agent: the target's, or for `local` this very Python."""
    if target.python:
        return target.python
    return sys.executable if target.transport == "local" else "python3"
