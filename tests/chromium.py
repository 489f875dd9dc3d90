"""Render a page in a real headless Chromium (Debian's package): the DOM after load, a screenshot,
and the browser's console messages and network requests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
         "--host-resolver-rules=MAP * ~NOTFOUND"]  # nothing leaves this machine, whatever the page asks


def available() -> bool:
    return Path(CHROMIUM).exists()


def _run(page: Path, extra: list[str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=180)


def console_messages(stderr: str) -> list[str]:
    """What the page logged: errors, CSP violations, blocked loads all arrive as CONSOLE lines."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def dump_dom(page: Path) -> tuple[str, list[str]]:
    proc = _run(page, ["--dump-dom"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, console_messages(proc.stderr)


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1400, 2000)) -> list[str]:
    proc = _run(page, [f"--screenshot={png}", f"--window-size={size[0]},{size[1]}"])
    assert proc.returncode == 0 and png.is_file(), proc.stderr[-2000:]
    return console_messages(proc.stderr)
