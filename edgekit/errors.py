"""One exception hierarchy for the host side; cli.py maps it to exit codes and messages.

Every message is one line that says what is wrong and how to fix it, so the CLI can print
it as-is without a traceback.
"""

from __future__ import annotations

import re


class EdgekitError(Exception):
    """Base of every error edgekit reports to a user."""

    exit_code = 1


class UsageError(EdgekitError):
    """Bad input from the user: a file, a key, a flag. Nothing has been written yet."""

    exit_code = 2


class SpecError(UsageError):
    """A TOML file or flag value failed validation."""


class ModelError(UsageError):
    """The model cannot be loaded or does not accept the declared inputs."""


class StoreError(UsageError):
    """The results store cannot be opened or written: corrupt, read-only or locked."""


class CompressError(EdgekitError):
    """A converter failed for a recipe."""


class DeviceError(EdgekitError):
    """The device or its agent failed; `kind` is the agent's documented error kind."""

    exit_code = 3

    def __init__(self, message: str, kind: str = "device") -> None:
        super().__init__(message)
        self.kind = kind


class TransportError(DeviceError):
    """Bytes could not reach the device or come back."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="transport")


class ConnectionLost(TransportError):
    """The connection, or the agent session holding the device lock, is gone mid-run. Never one
    variant's failure: the lock went with it, so the run stops and nothing more touches the device."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.kind = "connection_lost"


class SelectionError(EdgekitError):
    """No variant satisfies the profile's constraints."""

    exit_code = 4


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(exc: BaseException, limit: int = 300, with_type: bool = False) -> str:
    """A third-party exception as one short line a user can read after ours: converters and
    runtimes raise multi-line, colour-coded messages that would otherwise break the CLI's
    one-line contract. The agent keeps its own copy: it may not import host code."""
    text = " ".join(_ANSI.sub("", str(exc)).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(exc).__name__}: {text}" if with_type else text
