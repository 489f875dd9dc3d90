"""Artifact checks on the device: nothing is loaded before its sha256 matches the host's."""

from __future__ import annotations

import hashlib
import os
from typing import Optional

from .protocol import AgentError


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified(path: str, expected: Optional[str]) -> str:
    """`path` if it exists and (when `expected` is given) hashes to it; an AgentError otherwise."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise AgentError("artifact_missing", "no artifact at {}".format(path))
    if expected:
        actual = sha256_file(path)
        if actual != expected.lower():
            raise AgentError("artifact_corrupt", "{} has sha256 {}..., expected {}...: the file changed in "
                             "transit or on disk; push it again".format(path, actual[:12], expected[:12]))
    return path
