"""The agent's side of the protocol: one JSON document on stdout, errors with a documented kind."""

from __future__ import annotations

import json
import sys

SCHEMA = 1

# The documented error kinds (DESIGN.md). The host maps each to a message and a fix.
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
    "internal",          # a bug in the agent
)


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
