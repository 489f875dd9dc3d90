"""The local transport: the device is this machine, reached through subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from ..errors import DeviceError, TransportError
from . import Completed


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

    def put(self, local: str, remote: str) -> None:
        dest = self._abs(remote)
        try:
            _private_dirs(dest.parent)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")  # 0600
            with os.fdopen(fd, "wb") as out, open(local, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
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
            proc = subprocess.Popen(list(argv), cwd=self.home, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            raise TransportError(f"cannot start {argv[0]!r} locally: {exc.strerror}. Fix: set the target's "
                                 f"python to an existing interpreter") from None
        return LocalSession(proc)

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
    """A running local command: read stdout lines, close stdin to end it."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def readline(self, timeout: float) -> str:
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return ""
        return self.proc.stdout.readline()

    def stderr(self) -> str:
        return ""

    def close(self, timeout: float = 10.0) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()
