"""The content-addressed artifact cache: one folder per key holding the artifact and variant.json.

The key covers everything that changes the bytes or the figures (weights, recipe, options, data,
converter versions), so compressing twice does no work and a changed input never hits a stale
entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..records import Variant


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def lookup(self, key: str) -> Variant | None:
        """The cached variant for `key`, if complete and its artifact still matches its hash."""
        meta = self.root / key / "variant.json"
        if not meta.is_file():
            return None
        try:
            variant = Variant.from_dict(json.loads(meta.read_text()))
        except (ValueError, TypeError):
            return None
        artifact = self.root / key / variant.file
        if variant.status != "ok" or not artifact.is_file() or file_sha256(artifact) != variant.sha256:
            return None
        variant.path = str(artifact)
        return variant

    def staging(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_abandoned_builds()
        return Path(tempfile.mkdtemp(dir=self.root, prefix=f".build-{os.getpid()}-"))

    def _remove_abandoned_builds(self) -> None:
        """Staging folders of builds whose process is gone (killed mid-build): each is named with
        its builder's pid, so a build another edgekit is running on this cache is left alone."""
        for folder in self.root.glob(".build-*"):
            pid = folder.name.split("-")[1]
            if pid.isdigit() and _running(int(pid)):
                continue
            if not pid.isdigit() and time.time() - _mtime(folder) < 86400:
                continue  # an older edgekit's folder without a pid: only once it is a day old
            shutil.rmtree(folder, ignore_errors=True)

    def commit(self, staging: Path, variant: Variant) -> Variant:
        """Move a finished build into place atomically; a crash leaves only a `.build-*` folder."""
        (staging / "variant.json").write_text(json.dumps({**variant.to_dict(), "path": ""}, indent=2))
        final = self.root / variant.cache_key
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        variant.path = str(final / variant.file)
        return variant


def _mtime(path: Path) -> float:
    """0 for a folder another process removed meanwhile (then there is nothing to remove)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, so running
        pass
    return True
