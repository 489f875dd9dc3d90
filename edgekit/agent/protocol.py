"""The agent's side of the protocol: one JSON document on stdout, errors with a documented kind."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, fields
from typing import List, Optional

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


class AgentError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        assert kind in KINDS, kind
        super().__init__(message)
        self.kind = kind
        self.message = message


def render(doc: dict) -> str:
    """One document as the line `emit` writes (the session sends the same text inside its answer)."""
    doc = dict(doc)
    doc.setdefault("schema", SCHEMA)
    return json.dumps(doc, default=_plain) + "\n"


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
