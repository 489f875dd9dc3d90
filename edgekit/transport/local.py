"""The local transport: the device is this machine, reached through subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from ..errors import DeviceError, TransportError
from . import Completed, Progress


class LocalTransport:
    name = "local"

    def __init__(self, home: Path | None = None) -> None:
        self.home = Path(home or Path.home())

    def _abs(self, remote: str) -> Path:
        path = Path(os.path.expanduser(remote))
        return path if path.is_absolute() else self.home / path

    def run(self, argv: Sequence[str], timeout: float) -> Completed:
        try:
            proc = subprocess.run(list(argv), cwd=self.home, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{argv[0]} did not finish in {timeout:.0f}s on the local device; raise the "
                              f"profile's [bench] max_s or check what is hogging the CPU", kind="timeout") from None
        except OSError as exc:
            raise TransportError(f"cannot start {argv[0]!r} locally: {exc.strerror}. Fix: set the target's "
                                 f"python to an existing interpreter") from None
        return Completed(proc.returncode, proc.stdout, proc.stderr)

    def put(self, local: str, remote: str, progress: Progress | None = None) -> None:
        dest = self._abs(remote)
        try:
            _private_dirs(dest.parent)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")  # 0600
            total, sent = os.path.getsize(local), 0
            with os.fdopen(fd, "wb") as out, open(local, "rb") as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    out.write(chunk)
                    sent += len(chunk)
                    if progress is not None:
                        progress(sent, total)
            os.replace(tmp, dest)
        except OSError as exc:
            raise TransportError(f"cannot write {dest}: {exc.strerror}. Fix: free space or set the target's "
                                 f"workdir to a writable folder") from None

    def get(self, remote: str, local: str) -> None:
        try:
            shutil.copyfile(self._abs(remote), local)
        except OSError as exc:
            raise TransportError(f"cannot read {self._abs(remote)}: {exc.strerror}") from None

    def exists(self, remote: str) -> bool:
        return self._abs(remote).exists()

    def spawn(self, argv: Sequence[str]) -> LocalSession:
        """Start a long-lived command whose stdin stays open (the device lock holder)."""
        try:
            err = tempfile.TemporaryFile()  # read back by stderr(); a pipe nobody reads could fill up
            proc = subprocess.Popen(list(argv), cwd=self.home, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=err)
        except OSError as exc:
            raise TransportError(f"cannot start {argv[0]!r} locally: {exc.strerror}. Fix: set the target's "
                                 f"python to an existing interpreter") from None
        return LocalSession(proc, err)

    def close(self) -> None:
        pass


def _private_dirs(path: Path) -> None:
    """Missing folders made 0700, as sftp's mkdir does for the SSH transport (Path.mkdir's `mode`
    does not reach the parents it creates)."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if not folder.is_dir():
                raise


class LocalSession:
    """A running local command: read stdout lines, write its stdin, close stdin to end it."""

    def __init__(self, proc: subprocess.Popen, err=None) -> None:
        self.proc = proc
        self._err = err
        self._buffer = b""

    def readline(self, timeout: float, max_bytes: int = 1 << 20) -> str:
        import selectors
        import time

        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer and len(self._buffer) < max_bytes:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    break
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                self._buffer += chunk
        if b"\n" in self._buffer[:max_bytes]:
            line, _, self._buffer = self._buffer.partition(b"\n")
            return line.decode("utf-8", "replace") + "\n"
        line, self._buffer = self._buffer[:max_bytes], self._buffer[max_bytes:]
        return line.decode("utf-8", "replace")

    def write(self, text: str) -> None:
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise TransportError(f"the local agent session has ended ({exc})") from None

    def stderr(self) -> str:
        if self._err is None:
            return ""
        self._err.seek(0)
        return self._err.read()[-65536:].decode("utf-8", "replace")

    def close(self, timeout: float = 10.0) -> None:
        try:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            for stream in (self.proc.stdout, self._err):
                if stream:
                    stream.close()
