"""File placement on the device: nothing is loaded before its sha256 matches the host's, and no
file operation follows a symbolic link or reuses a name someone else could have prepared.

Another account on the device (or a process that got in earlier) could leave a link where the
agent is about to write (`lock`, `run --outputs`), so that writing there truncates a file of
theirs choosing. Every file the agent creates is therefore created anew (O_CREAT | O_EXCL, which
also refuses a dangling link) under a random name and renamed into place; rename(2) replaces a
link at the destination instead of following it. Files are 0600 and folders 0700.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from typing import Callable, Optional

from .protocol import AgentError

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with os.fdopen(os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC), "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified(path: str, expected: Optional[str]) -> str:
    """`path` if it is a regular file (not a link) and (when `expected` is given) hashes to it;
    an AgentError otherwise."""
    path = os.path.expanduser(path)
    try:
        st = os.lstat(path)
    except OSError:
        raise AgentError("artifact_missing", "no artifact at {}".format(path))
    if stat.S_ISLNK(st.st_mode):
        raise AgentError("artifact_corrupt", "{} is a symbolic link, not the pushed file: push it again".format(path))
    if not stat.S_ISREG(st.st_mode):
        raise AgentError("artifact_missing", "no artifact at {} (not a regular file)".format(path))
    if expected:
        actual = sha256_file(path)
        if actual != expected.lower():
            raise AgentError("artifact_corrupt", "{} has sha256 {}..., expected {}...: the file changed in "
                             "transit or on disk; push it again".format(path, actual[:12], expected[:12]))
    return path


def private_dirs(path: str) -> str:
    """Create `path` and any missing parents as 0700 folders (os.makedirs gives new parents the
    umask's mode since Python 3.7); existing folders are left as they are."""
    path = os.path.abspath(os.path.expanduser(path))
    missing = []
    head = path
    while head and not os.path.isdir(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except OSError as exc:
            if exc.errno != errno.EEXIST or not os.path.isdir(folder):
                raise
    return path


def private_workdir(workdir: str) -> str:
    """The agent's workdir, created 0700 if missing, and refused unless this user owns it."""
    root = private_dirs(workdir)
    st = os.stat(root)
    if st.st_uid != os.getuid():
        raise AgentError("bad_request", "the workdir {} belongs to uid {}, not to this user (uid {}); set the "
                         "target's workdir to a folder of its own".format(root, st.st_uid, os.getuid()))
    return root


def open_private(path: str, flags: int = os.O_RDWR) -> int:
    """A file descriptor on `path` that is never a link's target: opened with O_NOFOLLOW (created
    0600 if missing), and refused unless it is a regular file with one name, owned by this user."""
    fd = os.open(path, flags | os.O_CREAT | NOFOLLOW | CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.getuid():
            raise OSError(errno.EPERM, "not a private regular file (a device, a hard link or another user's)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_replacing(path: str, write: Callable[[object], None]) -> str:
    """Write a new file at `path` through `write(fileobj)`: into a fresh, randomly named 0600 file
    in the same folder, then renamed over `path` (a link there is replaced, never followed)."""
    path = os.path.abspath(os.path.expanduser(path))
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".{}.".format(name), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def copy_new(source: str, dest: str) -> None:
    """Copy `source` to `dest`, which must not exist yet (O_EXCL: not even as a link)."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out, os.fdopen(os.open(source, os.O_RDONLY | NOFOLLOW | CLOEXEC), "rb") as src:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            out.write(chunk)
