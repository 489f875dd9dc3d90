"""`gc`: remove what a device's workdir holds that no deployment uses and no run will miss.

A board's storage is small (an SD card, a phone) and every run adds to it: artifacts pushed for
measurement, evaluation inputs, variants installed but never made current. What stays, whatever
its age: the `current` and `previous` deployment of every model and the artifacts they were
installed from, and the agent. What goes: leftovers of work that never finished (a half-staged
install, an upload or a link switch cut off, scratch outputs), then anything else not touched for
`keep_days`. It runs under the device lock, so no command of another run is mid-way through
these files. Nothing is followed through a link: a link is removed as a link.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from typing import Dict, List, Optional, Set

from .files import NOFOLLOW
from .protocol import AgentError

DAY_S = 86400.0


def _size(path: str) -> int:
    """Bytes under `path`, links counted as links."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def _newest(path: str) -> float:
    """The newest modification time at or under `path` (a folder is as recent as its newest file)."""
    newest = os.lstat(path).st_mtime
    if stat.S_ISDIR(os.lstat(path).st_mode):
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
                except OSError:
                    pass
    return newest


def _entries(folder: str) -> List[str]:
    try:
        st = os.lstat(folder)
    except OSError:
        return []
    if not stat.S_ISDIR(st.st_mode):
        return []
    return sorted(os.listdir(folder))


def _link_target(model_dir: str, name: str) -> Optional[str]:
    path = os.path.join(model_dir, name)
    return os.readlink(path) if os.path.islink(path) else None


def _installed_sha(variant_dir: str) -> Optional[str]:
    try:
        fd = os.open(os.path.join(variant_dir, "deployment.json"), os.O_RDONLY | NOFOLLOW)
        with os.fdopen(fd) as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    sha = record.get("sha256") if isinstance(record, dict) else None
    return sha if isinstance(sha, str) else None


class _Plan:
    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.removed: List[Dict[str, object]] = []
        self.kept: List[Dict[str, object]] = []

    def remove(self, path: str, why: str) -> None:
        size = _size(path)
        if not self.dry_run:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        self.removed.append({"path": path, "bytes": size, "why": why})

    def keep(self, path: str, why: str) -> None:
        self.kept.append({"path": path, "bytes": _size(path), "why": why})


def collect(workdir: str, keep_days: float, dry_run: bool = False, now: Optional[float] = None) -> dict:
    """Remove (or with `dry_run` only list) what nothing needs; the document lists both sides."""
    if not keep_days >= 0:
        raise AgentError("bad_request", "--keep-days must be a number of days >= 0, not {}".format(keep_days))
    root = os.path.expanduser(workdir)
    if not any(os.path.isdir(os.path.join(root, d)) and not os.path.islink(os.path.join(root, d))
               for d in ("agent", "deployments", "artifacts")):
        # gc deletes; a workdir set to the wrong place (/, a home) must not have its tmp/ emptied
        raise AgentError("bad_request", "{} is not an edgekit workdir (no agent/, deployments/ or artifacts/ "
                                        "in it): nothing removed; check the target's workdir".format(root))
    cutoff = (time.time() if now is None else now) - keep_days * DAY_S
    plan = _Plan(dry_run)
    in_use: Set[str] = set()
    try:
        deployments = os.path.join(root, "deployments")
        for model in _entries(deployments):
            model_dir = os.path.join(deployments, model)
            if os.path.islink(model_dir) or not os.path.isdir(model_dir):
                continue
            live = {_link_target(model_dir, "current"), _link_target(model_dir, "previous")} - {None}
            for name in _entries(model_dir):
                path = os.path.join(model_dir, name)
                is_link, is_dir = os.path.islink(path), os.path.isdir(path) and not os.path.islink(path)
                if name.startswith(".staging-") and is_dir:
                    plan.remove(path, "an install that never finished")
                elif name.startswith((".current.", ".previous.")) and is_link:
                    plan.remove(path, "a link switch that never finished")
                elif name in live and is_dir:
                    plan.keep(path, "current" if name == _link_target(model_dir, "current") else "previous")
                    sha = _installed_sha(path)
                    if sha:
                        in_use.add(sha)
                elif is_dir and not name.startswith("."):
                    if _newest(path) < cutoff:
                        plan.remove(path, "installed but neither current nor previous, untouched for "
                                          "{:g} days".format(keep_days))
                    else:
                        plan.keep(path, "installed recently")
        artifacts = os.path.join(root, "artifacts")
        for sha in _entries(artifacts):
            folder = os.path.join(artifacts, sha)
            if os.path.islink(folder) or not os.path.isdir(folder):
                continue
            for name in _entries(folder):
                if name.startswith(".") and ".upload-" in name:
                    plan.remove(os.path.join(folder, name), "an upload that never finished")
            if sha in in_use:
                plan.keep(folder, "installed")
            elif _newest(folder) < cutoff:
                plan.remove(folder, "not installed, pushed over {:g} days ago".format(keep_days))
            else:
                plan.keep(folder, "pushed recently")
        inputs = os.path.join(root, "inputs")
        for name in _entries(inputs):
            path = os.path.join(inputs, name)
            if name.startswith(".upload-"):
                plan.remove(path, "an upload that never finished")
            elif os.lstat(path).st_mtime < cutoff:
                plan.remove(path, "inputs pushed over {:g} days ago".format(keep_days))
            else:
                plan.keep(path, "inputs pushed recently")
        scratch = os.path.join(root, "tmp")
        for name in _entries(scratch):
            plan.remove(os.path.join(scratch, name), "scratch output of an earlier run")
    except OSError as exc:
        raise AgentError("bad_request", "cannot clean {}: {}".format(getattr(exc, "filename", root), exc.strerror))
    return {"command": "gc", "workdir": root, "dry_run": dry_run, "keep_days": keep_days,
            "removed": plan.removed, "kept": plan.kept,
            "freed_bytes": sum(int(r["bytes"]) for r in plan.removed)}
