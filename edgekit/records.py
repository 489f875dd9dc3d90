"""What crosses module lines after work is done: a built variant, a measurement of it, a
decision about it, a run.

Records are what compress, the pipeline, the results store, selection and the report hand each
other; they import nothing of edgekit so every layer can hold them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Variant:
    """One built artifact and what the host knows about it. Serialised as `variant.json`."""

    id: str
    recipe: str
    format: str
    precision: str
    runtime: str
    model: str
    file: str = ""
    sha256: str = ""
    size_bytes: int = 0
    status: str = "ok"  # ok | failed
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    converters: dict[str, str] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    cache_key: str = ""
    created: str = ""
    path: str = ""  # absolute path of the artifact on the host; not part of the identity
    techniques: list[dict[str, Any]] = field(default_factory=list)  # one report per technique step

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Variant:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def accuracy_drop(self) -> float | None:
        return self.metrics.get("accuracy_drop")


def emulated(document: dict[str, Any]) -> bool:
    """Whether an agent document (probe, bench, run) says it ran under user-mode emulation."""
    return bool((document.get("emulation") or {}).get("emulated"))


@dataclass
class Measurement:
    """One variant measured on one device: the agent's bench document, flattened for the store."""

    target: str
    variant_id: str
    sha256: str
    status: str  # ok | failed
    stats: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    cold: dict[str, Any] = field(default_factory=dict)
    error_kind: str | None = None
    error_message: str | None = None
    settings_key: str = ""
    document: dict[str, Any] = field(default_factory=dict)
    reused: bool = False  # taken from the store instead of measured in this run
    reused_from: int | None = None  # the run that measured it, when reused
    store_id: int | None = None  # its row in the results store, once saved
    run_id: int | None = None  # the run that took it, when read back from the store
    created: str = ""  # when it was stored (UTC, ISO 8601), when read back from the store

    @property
    def power(self) -> dict[str, Any]:
        """The agent's `power` section: avg/peak W, energy per inference, sensor, or why none."""
        return self.document.get("power") or {}

    @property
    def emulated(self) -> bool:
        """Measured under user-mode emulation (qemu): the timings are the emulator's, not the board's."""
        return emulated(self.document)

    @property
    def paired(self) -> dict[str, Any]:
        """Per-round latency ratios against the run's baseline variant (`rounds.paired_ratios`)."""
        return self.document.get("paired") or {}

    @property
    def parity(self) -> dict[str, Any]:
        """The device's outputs for evaluation samples against the host's (`pipeline.device_parity`)."""
        return self.document.get("parity") or {}

    def figure(self, name: str) -> float | None:
        """A figure by the names profiles use (`p90_ms`, `peak_rss_mb`, `energy_mj`, ...)."""
        if name == "peak_rss_mb":
            return self.memory.get("peak_rss_mb")
        if name == "energy_mj":
            return self.power.get("energy_per_inference_mj")
        return self.stats.get(name)



@dataclass(frozen=True)
class Decision:
    """What `select` decided about one variant on one target, as the run recorded it when deciding:
    a report shows this, so a later change to the selection rules does not rewrite past choices."""

    variant_id: str
    status: str  # chosen | eligible | rejected
    reason: str
    objective: str
    objective_value: float | None = None
    figures: dict[str, float | None] = field(default_factory=dict)  # each constraint's figure, by constraint

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Run:
    """One edgekit command that wrote to the results store, and the edgekit that ran it."""

    id: int
    started: str
    command: str
    model: str | None
    profile: str | None
    edgekit_version: str


@dataclass(frozen=True)
class Deployment:
    """One install or rollback on a device as the store recorded it; `ok` False is a failure or,
    for a rollback whose message starts `pending:`, an outcome never recorded."""

    id: int
    run_id: int | None
    target: str
    model: str
    variant_id: str | None
    action: str  # install | rollback
    ok: bool
    message: str
    created: str
