"""The host's end of an agent session (edgekit/agent/session.py): one agent process per device
run, started by one exec, holding the device lock and answering every command of the run.

A round trip to a board over Wi-Fi or a VPN costs tens of milliseconds and an SSH exec several
of them plus an interpreter start and a zipapp import; a run issues a dozen commands or more.
Each answer carries the command's own document text, which `Device.agent` checks with
`documents.validate` exactly as it checks a single command's stdout.
"""

from __future__ import annotations

import json

from . import documents
from .errors import ConnectionLost, DeviceError
from .transport import Completed, Session

# Runs on the device's Python (any 3.x): the agent file must hash to the host's agent, else it
# answers a `boot` document saying what it found; if it does, the agent replaces this process.
# One exec both checks the agent and starts the session. No link is followed.
BOOT = ("import hashlib, json, os, sys\n"
        "path, want = sys.argv[1], sys.argv[2]\n"
        "h = hashlib.sha256()\n"
        "try:\n"
        "    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0))\n"
        "except OSError:\n"
        "    fd = None\n"
        "if fd is not None:\n"
        "    with os.fdopen(fd, 'rb') as fh:\n"
        "        for chunk in iter(lambda: fh.read(1 << 20), b''):\n"
        "            h.update(chunk)\n"
        "if fd is None or h.hexdigest() != want:\n"
        "    found = h.hexdigest() if fd is not None else None\n"
        "    sys.stdout.write(json.dumps({'schema': 1, 'command': 'boot', 'found': found}) + '\\n')\n"
        "    sys.stdout.flush()\n"
        "    sys.exit(0)\n"
        "os.execv(sys.executable, [sys.executable, path] + sys.argv[3:])\n")

REPLY_SLACK_S = 30  # past a request's own timeout, how long the session may take to answer


class AgentSession:
    """Requests go out as JSON lines; answers are matched by id and checked before use."""

    def __init__(self, session: Session, target: str) -> None:
        self.session = session
        self.target = target
        self._next = 0
        self.broken: str | None = None  # why no further request can be sent

    def call(self, args: tuple[str, ...], timeout: float, max_stdout: int) -> Completed:
        """What the command printed and its exit code, as `Transport.run` would give them."""
        if self.broken:
            raise ConnectionLost(f"target {self.target}: the agent session ended earlier ({self.broken}), and "
                                 f"the device lock with it; nothing more was run. Fix: run again")
        self._next += 1
        request = {"id": self._next, "argv": list(args), "timeout": timeout, "max_stdout": max_stdout}
        self.session.write(json.dumps(request) + "\n")
        line = self.session.readline(timeout + REPLY_SLACK_S, max_bytes=2 * max_stdout + (1 << 20))
        if not line.endswith("\n"):
            self.broken = f"no answer to {args[0]}"
            if line:
                raise documents.unusable(self.target, f"the session's answer to {args[0]} is over "
                                      f"{2 * max_stdout + (1 << 20)} bytes")
            last = _last_line(self.session.stderr()) or "the connection or the agent closed without a word"
            raise ConnectionLost(f"target {self.target}: the agent session did not answer {args[0]} within "
                                 f"{timeout + REPLY_SLACK_S:.0f}s or ended ({last}); the device lock went with it, "
                                 f"so nothing more was done on the device. Fix: run again; if it persists, check "
                                 f"the device and the network")
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):
            self.broken = f"an unreadable answer to {args[0]}"
            raise documents.unusable(self.target, f"the session's answer to {args[0]} is not JSON") from None
        try:
            code, out, err, timed_out = documents.session_reply(doc, self._next, self.target, max_stdout)
        except DeviceError:
            self.broken = f"a malformed answer to {args[0]}"
            raise
        if timed_out:
            raise DeviceError(f"target {self.target}: {args[0]} did not finish in {timeout:.0f}s; raise the "
                              f"profile's [bench] max_s or check what is hogging the device", kind="timeout")
        return Completed(-1 if code is None else code, out, err)

    def close(self) -> None:
        self.session.close()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
