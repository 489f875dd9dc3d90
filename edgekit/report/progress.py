"""Progress for a person: rich bars at a terminal, plain lines in a log, nothing under --json.

These are the pipeline's `Events`: the pipeline says what is happening, these decide how it looks.
"""

from __future__ import annotations

import time
from typing import Any

from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from ..pipeline import Events
from .output import err, say


class _ProgressSteps(Events):
    """A stage's steps on one progress task: each new step completes the one before it."""

    progress: Progress
    task: Any
    _started: bool = False

    def step(self, label: str) -> None:
        if self._started:
            self.progress.advance(self.task)
        self._started = True
        self.progress.update(self.task, item=label)


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _Count(ProgressColumn):
    """Steps as N/M; an upload's task as bytes sent of its size."""

    def render(self, task: Any) -> Text:
        if task.fields.get("upload"):
            return Text(f"{_bytes(task.completed)}/{_bytes(task.total or 0)}")
        return Text(f"{int(task.completed)}/{int(task.total or 0)}")


class _Upload:
    """One upload's figures: bytes, rate and time left from what went out so far."""

    def __init__(self, label: str, total: int, now: float) -> None:
        self.label, self.total, self.started, self.sent, self.last_line = label, total, now, 0, now

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = self.sent / elapsed
        left = (self.total - self.sent) / rate if rate > 0 else None
        share = 100.0 * self.sent / self.total if self.total else 100.0
        eta = f", about {_duration(left)} left" if left is not None and self.sent < self.total else ""
        return (f"uploading {self.label}: {_bytes(self.sent)} of {_bytes(self.total)} ({share:.0f} %), "
                f"{_bytes(rate)}/s{eta}")


class RichEvents(_ProgressSteps):
    """Progress bars on stderr for a person at a terminal; plain notes otherwise. Uploads show
    bytes, rate and time left: a bar at a terminal, a line every PROGRESS_EVERY_S otherwise (a log
    or CI shows that a 14 MB model is still going out over a slow link)."""

    PROGRESS_EVERY_S = 10.0

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.progress = Progress(TextColumn("{task.description:<24}"), BarColumn(), _Count(),
                                 TextColumn("{task.fields[item]}"), TimeElapsedColumn(),
                                 console=err, transient=True, disable=quiet or not err.is_terminal)
        self.task: Any = None
        self._upload: _Upload | None = None
        self._upload_task: Any = None

    def transfer(self, label: str, sent: int, total: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self._upload is None or self._upload.label != label or sent < self._upload.sent:
            self._end_upload()
            self._upload = _Upload(label, total, now)
            if err.is_terminal:
                self._upload_task = self.progress.add_task("upload", total=total, item=label, upload=True)
        up = self._upload
        up.sent = sent
        if err.is_terminal:
            self.progress.update(self._upload_task, completed=sent, item=up.line(now).split(": ", 1)[1])
        elif now - up.last_line >= self.PROGRESS_EVERY_S and sent < total:
            up.last_line = now
            say(err, up.line(now))
        if sent >= total:
            if not err.is_terminal and now - up.started >= self.PROGRESS_EVERY_S:
                say(err, f"uploaded {label}: {_bytes(total)} in {_duration(now - up.started)}")
            self._end_upload()

    def _end_upload(self) -> None:
        if self._upload_task is not None:
            self.progress.remove_task(self._upload_task)
        self._upload, self._upload_task = None, None

    def __enter__(self) -> RichEvents:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish()
        self.progress.stop()

    def _finish(self) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[self.task].total, item="")

    def stage(self, name: str, total: int) -> None:
        self._finish()
        self.task = self.progress.add_task(name, total=total, item="")
        self._started = False

    def note(self, message: str) -> None:
        if not self.quiet:
            say(err, message)


class FleetEvents(_ProgressSteps):
    """One live progress line per device, all in one rich Progress shared by the device threads."""

    def __init__(self, progress: Progress, target: str, quiet: bool) -> None:
        self.progress, self.target, self.quiet = progress, target, quiet
        self.task = progress.add_task(f"{target}: connect", total=1, item="")
        self._started = False

    def stage(self, name: str, total: int) -> None:
        self.progress.update(self.task, description=f"{self.target}: {name}", total=max(total, 1), completed=0,
                             item="")
        self._started = False

    def note(self, message: str) -> None:
        if not self.quiet:
            say(self.progress.console, f"{self.target}: {message}")

    def transfer(self, label: str, sent: int, total: int) -> None:
        """An upload on this device's line at a terminal; a line every PROGRESS_EVERY_S otherwise."""
        if self.quiet:
            return
        now = time.monotonic()
        up = getattr(self, "_upload", None)
        if up is None or up.label != label or sent < up.sent:
            up = self._upload = _Upload(label, total, now)
        up.sent = sent
        if self.progress.console.is_terminal:
            self.progress.update(self.task, item=up.line(now)[len("uploading "):])
        elif now - up.last_line >= RichEvents.PROGRESS_EVERY_S and sent < total:
            up.last_line = now
            say(self.progress.console, f"{self.target}: {up.line(now)}")
        if sent >= total:
            self._upload = None

    def done(self, ok: bool) -> None:
        total = self.progress.tasks[self.task].total
        self.progress.update(self.task, completed=total, item="done" if ok else "FAILED")


def fleet_progress(quiet: bool) -> Progress:
    """The one Progress every device's `FleetEvents` line lives in (on stderr, kept when done)."""
    return Progress(TextColumn("{task.description:<32}"), BarColumn(), _Count(), TextColumn("{task.fields[item]}"),
                    TimeElapsedColumn(), console=err, disable=quiet or not err.is_terminal)
