"""The device lock and verified file placement: both need the device's own filesystem semantics.

`lock`: an exclusive `flock` on `<workdir>/lock`, held by this agent process for as long as the
host keeps its stdin open (the host's SSH session). When the host exits, is killed or loses the
connection, sshd closes the session, stdin reaches EOF (or the process dies) and the kernel drops
the lock: a lock can never outlive its holder. The file keeps who took it last, so a second run
can say "busy, held by ..." and a lock file nobody holds is simply stale and free.

`accept`: a file uploaded under a temporary name becomes visible under its final name only after
its sha256 matches, by rename(2) in the same directory.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import time
from typing import Optional, Tuple

from .files import NOFOLLOW, open_private, private_workdir, verified
from .protocol import AgentError, emit


def _holder(path: str) -> str:
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | NOFOLLOW), "r") as fh:
            doc = json.loads(fh.read(65536))
        return "{} since {}".format(doc.get("holder", "?"), doc.get("since", "?"))
    except (OSError, ValueError, AttributeError):
        return "an unknown process"


def take_lock(workdir: str, holder: str, wait_s: float) -> Tuple[int, dict]:
    """Take the lock (waiting up to wait_s): its file descriptor and the `lock` document to report.
    The lock is held until `release_lock` or until this process ends."""
    root = os.path.expanduser(workdir)
    path = os.path.join(root, "lock")
    try:
        root = private_workdir(workdir)
        fd = open_private(path)  # never through a link: the lock file is truncated below
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise AgentError("disk_full", "no space left on the device under {}".format(root))
        if exc.errno in (errno.ELOOP, errno.EPERM, errno.EMLINK):
            raise AgentError("bad_request", "{} is a symbolic link, a hard link or not this user's file; refusing "
                             "to use it as the lock: remove it".format(path))
        raise AgentError("bad_request", "cannot create {}: {}; set the target's workdir to a writable "
                         "folder".format(path, exc.strerror))
    deadline = time.monotonic() + max(0.0, wait_s)
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() >= deadline:
                os.close(fd)
                raise AgentError("busy", "busy, held by {}".format(_holder(path)))
            waited = True
            time.sleep(0.2)
    record = {"holder": holder, "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(record).encode())
    os.fsync(fd)
    doc = {"command": "lock", "acquired": True, "path": path, "waited": waited}
    doc.update(record)
    return fd, doc


def release_lock(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
    except OSError:
        pass
    os.close(fd)  # releases the flock


def hold_lock(workdir: str, holder: str, wait_s: float) -> int:
    """Take the lock, report it, hold it until stdin closes. Returns an exit code."""
    fd, doc = take_lock(workdir, holder, wait_s)
    emit(doc)
    try:
        while sys.stdin.buffer.read(4096):  # the host never writes: this returns at EOF
            pass
    except (OSError, KeyboardInterrupt):
        pass
    release_lock(fd)
    return 0


def accept(source: str, dest: str, sha256: str) -> dict:
    """Rename an uploaded file into place once its sha256 matches; a mismatch deletes it."""
    source = os.path.expanduser(source)
    dest = os.path.expanduser(dest)
    if ".upload-" not in os.path.basename(source):
        # a failed check deletes the source: only ever an upload's temporary name, never any path
        raise AgentError("bad_request", "accept takes an upload (a name with .upload- in it), not {}".format(source))
    try:
        verified(source, sha256)
    except AgentError:
        if os.path.isfile(source) and not os.path.islink(source):
            os.unlink(source)
        raise
    try:
        os.replace(source, dest)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise AgentError("disk_full", "no space left on the device for {}".format(dest))
        raise AgentError("bad_request", "cannot move the upload to {}: {}".format(dest, exc.strerror))
    _remove_cut_off_uploads(os.path.dirname(dest))
    return {"command": "accept", "path": dest, "sha256": sha256}


def _remove_cut_off_uploads(folder: str) -> None:
    """Uploads into `folder` that were cut off (a lost link, an interrupt) and never accepted.
    Only an agent holding the device lock accepts, so no other upload is in flight here."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name.startswith(".") and ".upload-" in name:
            try:
                os.unlink(os.path.join(folder, name))  # a link is removed as a link
            except OSError:
                pass


def lock_status(workdir: str) -> dict:
    """Whether the lock is held now, and by whom (a lock file nobody holds is reported as free)."""
    path = os.path.join(os.path.expanduser(workdir), "lock")
    if not os.path.lexists(path):
        return {"command": "lock-status", "held": False, "holder": None}
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    except OSError as exc:
        raise AgentError("bad_request", "cannot read the lock {}: {}; remove it".format(path, exc.strerror))
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        held: Optional[str] = None
    except OSError:
        held = _holder(path)
    finally:
        os.close(fd)
    return {"command": "lock-status", "held": held is not None, "holder": held}


def remove(workdir: str, paths: list) -> dict:
    """Delete scratch files the host is done with, best effort. Only files under the workdir are
    touched, and a link is removed itself, never what it points at (unlink(2))."""
    root = os.path.realpath(os.path.expanduser(workdir))
    removed = 0
    for path in paths:
        path = os.path.abspath(os.path.expanduser(path))
        if not os.path.realpath(os.path.dirname(path)).startswith(root + os.sep):
            raise AgentError("bad_request", "{} is not under the workdir {}: not removed".format(path, root))
        try:
            os.unlink(path)
            removed += 1
        except OSError:
            pass
    return {"command": "remove", "removed": removed}
