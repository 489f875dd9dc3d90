"""The deployment directory: versioned folders and `current`/`previous` links switched by rename.

A link is replaced with os.replace (rename(2)), so a reader sees the old target or the new one,
never a missing or half-written link. A staged install never touches `current`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from typing import Optional

from .files import NOFOLLOW, copy_new, private_dirs, private_workdir, sha256_file, verified
from .protocol import AgentError

SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _safe(value: str, what: str) -> str:
    if not SAFE.match(value) or ".." in value:
        raise AgentError("bad_request", "{} {!r} must be letters, digits, '.', '_' or '-'".format(what, value))
    return value


def _model_dir(workdir: str, model: str) -> str:
    return os.path.join(os.path.expanduser(workdir), "deployments", _safe(model, "model name"))


def _link(model_dir: str, name: str) -> Optional[str]:
    path = os.path.join(model_dir, name)
    if os.path.islink(path):
        target = os.readlink(path)
        if os.path.isdir(os.path.join(model_dir, target)):
            return target
    return None


def _switch(model_dir: str, name: str, target: str) -> None:
    tmp = os.path.join(model_dir, ".{}.{}".format(name, secrets.token_hex(8)))
    os.symlink(target, tmp)  # fails rather than follows if the name exists
    os.replace(tmp, os.path.join(model_dir, name))


def _disk_error(exc: OSError, where: str) -> AgentError:
    if exc.errno == errno.ENOSPC:
        return AgentError("disk_full", "no space left on the device under {}: free some space".format(where))
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return AgentError("bad_request", "cannot write under {}: {}; set the target's workdir to a writable "
                          "folder".format(where, exc.strerror))
    return AgentError("internal", "{}: {}".format(where, exc))


def install(workdir: str, model: str, variant: str, artifact: str, sha256: str, meta: Optional[str]) -> dict:
    """Stage `artifact` into deployments/<model>/<variant>/, verified; `current` is untouched."""
    source = verified(artifact, sha256)
    model_dir = _model_dir(workdir, model)
    final = os.path.join(model_dir, _safe(variant, "variant id"))
    name = os.path.basename(source)
    placed = os.path.join(final, name)
    if os.path.isfile(placed) and not os.path.islink(placed) and sha256_file(placed) == sha256:
        return {"command": "install", "path": placed, "reused": True}
    staging = None
    try:
        private_workdir(workdir)
        private_dirs(model_dir)
        _remove_cut_off_installs(model_dir)
        staging = tempfile.mkdtemp(prefix=".staging-{}-".format(variant), dir=model_dir)  # 0700, a new name
        copy_new(source, os.path.join(staging, name))
        verified(os.path.join(staging, name), sha256)
        record = {"variant": variant, "model": model, "file": name, "sha256": sha256,
                  "installed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "meta": json.loads(meta) if meta else {}}
        fd = os.open(os.path.join(staging, "deployment.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW,
                     0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=2)
        if os.path.isdir(final):
            if _link(model_dir, "current") == variant:
                raise AgentError("bad_request", "variant {} is current and its files differ; refusing to "
                                 "overwrite a live deployment".format(variant))
            shutil.rmtree(final)
        os.replace(staging, final)
    except OSError as exc:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
        raise _disk_error(exc, model_dir)
    except AgentError:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"command": "install", "path": os.path.join(final, name), "reused": False}


def _remove_cut_off_installs(model_dir: str) -> None:
    """Staging folders an earlier install left when it was cut off: installs run under the device
    lock, so none of them is still in progress."""
    for name in os.listdir(model_dir):
        path = os.path.join(model_dir, name)
        if name.startswith(".staging-") and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)


def activate(workdir: str, model: str, variant: str) -> dict:
    model_dir = _model_dir(workdir, model)
    if not os.path.isfile(os.path.join(model_dir, _safe(variant, "variant id"), "deployment.json")):
        raise AgentError("no_deployment", "variant {} is not installed for {}".format(variant, model))
    current = _link(model_dir, "current")
    try:
        if current and current != variant:
            _switch(model_dir, "previous", current)
        _switch(model_dir, "current", variant)
    except OSError as exc:
        raise _disk_error(exc, model_dir)
    return dict(status(workdir, model), command="activate")


def rollback(workdir: str, model: str) -> dict:
    model_dir = _model_dir(workdir, model)
    current, previous = _link(model_dir, "current"), _link(model_dir, "previous")
    if previous is None:
        raise AgentError("no_deployment", "nothing to roll back to for {}: no previous deployment".format(model))
    try:
        _switch(model_dir, "current", previous)
        if current:
            _switch(model_dir, "previous", current)
    except OSError as exc:
        raise _disk_error(exc, model_dir)
    return dict(status(workdir, model), command="rollback")


def status(workdir: str, model: Optional[str]) -> dict:
    root = os.path.join(os.path.expanduser(workdir), "deployments")
    models = [_safe(model, "model name")] if model else sorted(os.listdir(root)) if os.path.isdir(root) else []
    out = {}
    for name in models:
        model_dir = os.path.join(root, name)
        if not os.path.isdir(model_dir):
            continue
        current = _link(model_dir, "current")
        record = None
        if current:
            try:
                fd = os.open(os.path.join(model_dir, current, "deployment.json"), os.O_RDONLY | NOFOLLOW)
                with os.fdopen(fd) as fh:
                    record = json.load(fh)
                record = record if isinstance(record, dict) and isinstance(record.get("file"), str) else None
            except (OSError, ValueError):
                record = None
        installed = sorted(d for d in os.listdir(model_dir)
                           if not d.startswith(".") and os.path.isdir(os.path.join(model_dir, d))
                           and not os.path.islink(os.path.join(model_dir, d)))
        out[name] = {"current": current, "previous": _link(model_dir, "previous"), "installed": installed,
                     "deployment": record,
                     "path": os.path.join(model_dir, current, record["file"]) if current and record else None}
    return {"command": "status", "workdir": os.path.expanduser(workdir), "models": out}
