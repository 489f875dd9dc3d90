"""What `prepare` derives from the model and the data, kept beside the artifact cache so a warm run
does not derive it again: the weights digest of a checkpoint (or model) file, the original
model's outputs on the evaluation data, and that an ONNX file passed the checker and a load.

Both are keyed by content hashes, never by paths or times: a retrained checkpoint has other bytes
and misses; a same-content copy elsewhere hits. The weights digest is what keys every artifact
(`variant_key`), so recording "this file's bytes, loaded into this factory, give these weights"
lets a run whose artifacts are all cached produce exactly the keys a full load would, while
hashing the file instead of importing torch and running the model.

Entries land by rename (a crash leaves no half entry) and a damaged one reads as a miss.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..model import Dataset, Outputs
from ..settings import ModelSpec
from .store import cache_key, file_sha256

# Bump when what an entry means changes (how outputs are computed, what the weights digest covers).
DERIVED_RULES = 1


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def weights_file(spec: ModelSpec) -> Path | None:
    """The file whose bytes fix the torch weights: the factory's checkpoint, or a .pt/TorchScript
    module. None when only running code can tell (a factory without a checkpoint) or for ONNX."""
    if spec.is_onnx:
        return None
    return spec.checkpoint if spec.factory else spec.path


def runtime_of(spec: ModelSpec) -> str:
    """What computes the reference outputs; a new version may compute them (slightly) differently."""
    return runtime_of_onnx() if spec.is_onnx else f"torch=={_version('torch')}"


def runtime_of_onnx() -> str:
    return f"onnxruntime=={_version('onnxruntime')}"


class DerivedStore:
    """`weights/<key>.json` and `reference/<key>.npz` under the artifact cache's root."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # ------------------------------------------------------------------ weights digest per file

    def weights_key(self, spec: ModelSpec) -> str | None:
        """The key of the file's weights record: its bytes, what loads them and the inputs the
        model was checked on. None where there is no file to hash (or it cannot be read: then the
        full load reports why)."""
        path = weights_file(spec)
        if path is None:
            return None
        try:
            digest = file_sha256(Path(path))
        except OSError:
            return None
        return cache_key({"rules": DERIVED_RULES, "kind": "weights", "file": digest, "factory": spec.factory,
                          "inputs": [i.to_dict() for i in spec.inputs], "torch": _version("torch")})

    def weights_digest(self, key: str | None) -> str | None:
        if key is None:
            return None
        doc = self._read_json(self.root / "weights" / f"{key}.json")
        digest = doc.get("weights_digest") if doc else None
        return digest if isinstance(digest, str) and len(digest) == 64 else None

    def save_weights_digest(self, key: str | None, spec: ModelSpec, digest: str) -> None:
        if key is not None:
            self._write(self.root / "weights" / f"{key}.json", json.dumps({
                "weights_digest": digest, "file": str(weights_file(spec)), "factory": spec.factory}).encode())

    def forget_weights_digest(self, key: str | None) -> None:
        if key is not None:
            (self.root / "weights" / f"{key}.json").unlink(missing_ok=True)

    # ------------------------------------------------------------------ reference outputs

    def reference_key(self, spec: ModelSpec, model_digest: str, evaluation: Dataset) -> str:
        return cache_key({"rules": DERIVED_RULES, "kind": "reference", "model": model_digest,
                          "inputs": [i.to_dict() for i in spec.inputs], "evaluation": evaluation.digest(),
                          "runtime": runtime_of(spec)})

    def reference(self, key: str) -> Outputs | None:
        """The stored outputs, one array per output, or None (absent or unreadable)."""
        path = self.root / "reference" / f"{key}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                count = int(z["count"])
                return [z[f"out{i}"] for i in range(count)]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None

    def save_reference(self, key: str, outputs: Outputs) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, count=np.int64(len(outputs)), **{f"out{i}": np.asarray(o) for i, o in enumerate(outputs)})
        self._write(self.root / "reference" / f"{key}.npz", buf.getvalue())

    # ------------------------------------------------------------------ ONNX files that passed the checks

    def _onnx_checked_path(self, digest: str) -> Path:
        key = cache_key({"rules": DERIVED_RULES, "kind": "onnx-checked", "file": digest, "onnx": _version("onnx"),
                         "runtime": runtime_of_onnx()})
        return self.root / "checked" / f"{key}.json"

    def onnx_checked(self, digest: str) -> bool:
        """These bytes passed the ONNX checker and an onnxruntime load with these versions before."""
        return self._onnx_checked_path(digest).is_file()

    def save_onnx_checked(self, digest: str) -> None:
        self._write(self._onnx_checked_path(digest), b"{}")

    # ------------------------------------------------------------------ files

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any] | None:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
