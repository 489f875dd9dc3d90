"""The agent's side of the protocol: one JSON document on stdout, errors with a documented kind."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

SCHEMA = 1

# The documented error kinds (ARCHITECTURE.md, "Agent protocol"); the host keeps the fix for each
# beside it (edgekit.device.FIXES) and tests/test_protocol.py holds the two tables together.
KINDS = (
    "bad_request",       # arguments the agent cannot act on
    "runtime_missing",   # the runtime the artifact needs is not installed on the device
    "artifact_missing",  # no file at the given path
    "artifact_corrupt",  # sha256 differs from the one the host sent
    "load_failed",       # the runtime refused the artifact
    "run_failed",        # inference raised
    "out_of_memory",
    "disk_full",
    "no_deployment",     # status/rollback/activate found nothing to act on
    "busy",
    "timeout",           # the command ran past its time and was killed, with what it started
    "internal",          # a bug in the agent
)

# Commands that run as a process of their own (a session's child, or under `within`): their memory
# figures are one variant's, and a runtime that hangs or crashes takes only its own process down.
CHILD_COMMANDS = ("bench", "run")


@dataclass(frozen=True)
class BenchRequest:
    """Everything one `bench` needs, as one value the host builds and the agent reads back.

    The same dataclass writes the command line (`to_argv`) and is rebuilt from the parsed one
    (`from_args`), so a setting added here cannot be dropped by one side: a benchmark's settings
    used to cross three layers as 19 loose parameters. Field names are the options' names with
    `_` for `-`; None leaves an option out (the agent's default applies).
    """

    artifact: str
    runtime: str
    sha256: Optional[str] = None
    inputs: Optional[str] = None  # a pushed feeds file; None: the agent generates inputs
    warmup_s: float = 0.5
    min_runs: int = 50
    min_s: float = 1.0
    max_s: float = 30.0
    threads: int = 0
    max_runs: int = 1000000
    root: str = "/"  # read device files under this root (tests)
    power: str = "auto"
    power_interval_s: float = 0.05
    idle_s: float = 1.0
    cooldown_c: Optional[float] = None
    cooldown_max_s: float = 300.0
    warmup_max_s: Optional[float] = None
    rate_hz: Optional[float] = None
    provider: str = "auto"

    def to_argv(self) -> List[str]:
        """`bench --artifact=... --runtime=...` with every set option, in field order. `--opt=value`
        and not `--opt value`: a value that starts with `-` (a path) is then still a value."""
        return ["bench"] + ["--{}={}".format(f.name.replace("_", "-"), getattr(self, f.name))
                            for f in fields(self) if getattr(self, f.name) is not None]

    @classmethod
    def from_args(cls, args: object) -> "BenchRequest":
        """From `edgekit-agent bench`'s parsed options (argparse names them as the fields)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def _section(doc: dict, key: str) -> dict:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Probe:
    """What the host decides from a device's `probe` document, by name rather than by string key.

    The int8 defaults (`isa`), which recipes can run (`runtimes`), whether models can run at all
    (`numpy`), what keys a measurement's settings (`arch`, `cpu_model`, `cores`, `python`) and
    whether timings are real (`emulated`). `doc` is the whole document, kept for the store and the
    report. `from_dict` takes a document the host has checked (edgekit.documents); it refuses
    another schema or command itself, so no caller can read one by mistake.
    """

    doc: Dict[str, Any]
    arch: Optional[str] = None
    cpu_model: Optional[str] = None
    isa: Optional[Tuple[str, ...]] = None  # None: the probe could not tell
    cores: Optional[int] = None
    python: Optional[str] = None
    numpy: Optional[str] = None
    runtimes: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # installed, usable or with "error"
    warnings: Tuple[str, ...] = ()
    emulation: Dict[str, Any] = field(default_factory=dict)

    @property
    def emulated(self) -> bool:
        return bool(self.emulation.get("emulated"))

    def usable(self, runtime: str) -> bool:
        return runtime in self.runtimes and "error" not in self.runtimes[runtime]

    @classmethod
    def from_dict(cls, doc: Dict[str, Any]) -> "Probe":
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or doc.get("command", "probe") != "probe":
            raise ValueError("not a schema-{} probe document".format(SCHEMA))
        cpu = _section(doc, "cpu")
        isa = cpu.get("isa")
        return cls(doc=doc, arch=doc.get("arch"), cpu_model=cpu.get("model"),
                   isa=tuple(isa) if isinstance(isa, list) else None,
                   cores=_section(doc, "cores").get("usable"), python=_section(doc, "python").get("version"),
                   numpy=doc.get("numpy"), runtimes=dict(_section(doc, "runtimes")),
                   warnings=tuple(doc.get("warnings") or ()), emulation=_section(doc, "emulation"))


class AgentError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        assert kind in KINDS, kind
        super().__init__(message)
        self.kind = kind
        self.message = message


def render(doc: dict) -> str:
    """One document as the line `emit` writes (the session sends the same text inside its answer).

    Strict JSON: a non-finite float (a NaN from a sensor or a division) becomes null, since `NaN`
    and `Infinity` are not JSON and strict parsers refuse the whole document for them."""
    doc = dict(doc)
    doc.setdefault("schema", SCHEMA)
    return json.dumps(_finite(doc), default=_plain, allow_nan=False) + "\n"


def _finite(value):
    if isinstance(value, float):
        return value if value - value == 0.0 else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _finite(value.tolist())
    return value


def error_doc(kind: str, message: str) -> dict:
    return {"schema": SCHEMA, "error": {"kind": kind, "message": message}}


def emit(doc: dict) -> None:
    sys.stdout.write(render(doc))
    sys.stdout.flush()


def emit_error(kind: str, message: str) -> None:
    emit(error_doc(kind, message))


def _plain(obj):
    """numpy scalars and arrays without importing numpy here."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def log(message: str) -> None:
    sys.stderr.write("edgekit-agent: " + message + "\n")
