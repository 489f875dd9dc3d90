"""`session`: one agent process for a whole device run, so a run costs one SSH exec, one
interpreter start and one zipapp import instead of one of each per command.

It takes the device lock first (hold.py: held for as long as this process lives, released when
the host closes stdin) and reports it with the `lock` document. Then it reads requests, one JSON
object per line: `{"id": N, "argv": [COMMAND, ...], "timeout": S, "max_stdout": B}`, and answers
each with one line:

    {"schema": 1, "command": "session", "id": N, "exit": CODE or null, "stdout": TEXT,
     "stderr": TAIL, "timed_out": BOOL}

`stdout` is exactly what `edgekit-agent COMMAND ...` would have printed alone, so the host checks
it the same way in both modes. `bench` and `run` run as a fresh child process of this agent (a
benchmark's memory figures belong to one variant, and a runtime that crashes or leaks takes only
its own process down); everything else runs in this process. While a child runs, the end of
stdin (the host went away) kills it: the lock never outlives the run.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr
from typing import Callable, List, Optional, Tuple

from . import hold
from .protocol import CHILD_COMMANDS, SCHEMA, AgentError, error_doc, render

NOT_IN_SESSION = ("session", "lock", "within")
MAX_REQUEST = 1 << 20  # an argv; the largest (install's --meta) is a few kB
STDERR_TAIL = 8192


class _Stdin:
    """Lines from fd 0 without Python's buffering, so `select` on the fd tells the truth."""

    def __init__(self) -> None:
        self.buffer = b""
        self.eof = False

    def fill(self, timeout: Optional[float]) -> bool:
        """Read what is there (waiting up to `timeout`, None: forever); False once at end of input."""
        if self.eof:
            return False
        ready, _, _ = select.select([0], [], [], timeout)
        if ready:
            try:
                chunk = os.read(0, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                return False
            self.buffer += chunk
        return True

    def readline(self) -> Optional[bytes]:
        """The next request line; None at end of input (or a line over MAX_REQUEST: the host is broken)."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_REQUEST or not self.fill(None):
                return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line


def serve(workdir: str, holder: str, wait_s: float, command: Callable[[List[str]], Tuple[int, Optional[dict]]],
          python: Optional[str] = None) -> None:
    """Hold the lock and answer requests until stdin closes. `command` answers one argv in this
    process (the CLI's own dispatcher, handed in so this module does not import the CLI). Children
    run under `python` (the target's interpreter as the host names it: it may be a wrapper that
    sets up the runtime)."""
    fd, doc = hold.take_lock(workdir, holder, wait_s)
    doc["session"] = True
    _write(render(doc))
    agent = os.path.abspath(sys.argv[0])
    stdin = _Stdin()
    try:
        while True:
            line = stdin.readline()
            if line is None:
                break
            _write(render(_answer(line, [python or sys.executable, agent], stdin, command)))
            if stdin.eof:
                break
    except (OSError, KeyboardInterrupt):  # the host is gone (EPIPE) or we were told to stop
        pass
    finally:
        hold.release_lock(fd)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _answer(line: bytes, agent: List[str], stdin: _Stdin,
            command: Callable[[List[str]], Tuple[int, Optional[dict]]]) -> dict:
    reply = {"schema": SCHEMA, "command": "session", "id": None, "exit": 2, "stdout": "", "stderr": "",
             "timed_out": False}
    try:
        request = json.loads(line.decode("utf-8"))
        argv = request["argv"]
        reply["id"] = request["id"]
        timeout = float(request.get("timeout", 600))
        max_stdout = int(request.get("max_stdout", 16 << 20))
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            raise ValueError("argv is not a list of strings")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        reply["stdout"] = render(error_doc("bad_request", "unreadable session request: {}".format(exc)))
        return reply
    if argv[0] in NOT_IN_SESSION:
        reply["stdout"] = render(error_doc("bad_request", "{} cannot run inside a session".format(argv[0])))
        return reply
    if argv[0] in CHILD_COMMANDS:
        code, out, err, timed_out = _child(agent + argv, timeout, max_stdout, stdin)
    else:
        code, out, err, timed_out = _in_process(argv, command)
    reply.update({"exit": code, "stdout": out, "stderr": err[-STDERR_TAIL:], "timed_out": timed_out})
    return reply


def _in_process(argv: List[str], command: Callable[[List[str]], Tuple[int, Optional[dict]]]
                ) -> Tuple[int, str, str, bool]:
    err = io.StringIO()
    with redirect_stderr(err):
        code, doc = command(argv)
    return code, render(doc) if doc is not None else "", err.getvalue(), False


class _NoHost:
    """`within`'s stand-in for the session's stdin: a lone command has no host to watch, only a clock."""

    def fill(self, timeout: Optional[float]) -> bool:
        time.sleep(timeout or 0)
        return True


def within(argv: List[str], timeout: float) -> None:
    """`within --timeout-s T COMMAND ...`: what the per-command mode runs bench and run through.

    Without a session nothing on the device outlives a command the host gave up on, and a
    runtime that hangs would keep running after the lock is released. So the command runs as a
    child in its own process group, and at T the device itself kills that group (the host waits
    T plus a margin, so this happens before it releases the lock). Prints the command's own
    document, or a `timeout` error; exits with the command's code.
    """
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv or argv[0] not in CHILD_COMMANDS:
        raise AgentError("bad_request", "within runs one of {}, not {}".format(
            ", ".join(CHILD_COMMANDS), argv[0] if argv else "nothing"))
    code, out, err, timed_out = _child([sys.executable, os.path.abspath(sys.argv[0])] + argv, timeout, None, _NoHost())
    sys.stderr.write(err)
    if timed_out:
        text = render(error_doc("timeout", "{} did not finish in {:g}s; it was killed, with everything it "
                                           "started".format(argv[0], timeout)))
        code = 3
    else:
        text = out
    sys.stdout.write(text)
    sys.stdout.flush()
    sys.exit(code if code is not None and code >= 0 else 4)


def _child(argv: List[str], timeout: float, max_stdout: Optional[int], stdin: _Stdin) -> Tuple[Optional[int], str, str, bool]:
    """Run one command in a fresh agent process; its output goes to files (no pipe can fill up)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # Its own process group, so that killing it takes whatever it started too.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        deadline = time.monotonic() + timeout
        timed_out = False
        while proc.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not stdin.fill(min(left, 0.2)):  # the host went away: nothing will read this answer
                break
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
            proc.wait()
        code = proc.returncode
        out.seek(0)
        text = out.read(-1 if max_stdout is None else max_stdout + 1).decode("utf-8", "replace")
        err.seek(0, os.SEEK_END)
        err.seek(max(0, err.tell() - STDERR_TAIL))
        tail = err.read().decode("utf-8", "replace")
    if timed_out:
        return None, text, tail, True
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        tail += "\n(killed by signal {} on the device)".format(name)
    return code, text, tail, False
