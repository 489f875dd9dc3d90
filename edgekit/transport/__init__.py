"""How bytes reach a device. One interface, several transports; nothing else knows the difference.

Remote paths that are not absolute are relative to the login directory on the device, which is
how sftp and ssh exec both behave; the local transport does the same with the user's home.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


class Session(Protocol):
    def readline(self, timeout: float, max_bytes: int = 1 << 20) -> str:
        """One line of stdout, at most `max_bytes` ('' at end of output or on timeout; a longer
        line comes back cut, without its newline)."""

    def write(self, text: str) -> None:
        """Send text to the command's stdin."""

    def stderr(self) -> str: ...
    def close(self, timeout: float = 10.0) -> None: ...


# progress(bytes sent so far, total bytes) during an upload
Progress = Callable[[int, int], None]


class Transport(Protocol):
    name: str

    def run(self, argv: Sequence[str], timeout: float) -> Completed:
        """Run argv on the device (each element passed as one argument, never through a shell)."""

    def put(self, local: str, remote: str, progress: Optional[Progress] = None) -> None:
        """Copy a file to the device atomically: a temporary name, then rename. `progress` is
        called as bytes go out."""

    def get(self, remote: str, local: str) -> None:
        """Copy a file from the device."""

    def exists(self, remote: str) -> bool:
        ...

    def spawn(self, argv: Sequence[str]) -> Session:
        """Start a long-lived command whose stdin stays open until the session is closed."""

    def close(self) -> None:
        ...


def remote_path(workdir: str, *parts: str) -> str:
    """Join under a workdir, turning a leading `~/` into a login-relative path."""
    base = workdir[2:] if workdir.startswith("~/") else ("" if workdir == "~" else workdir)
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate([base, *parts]) if p)
