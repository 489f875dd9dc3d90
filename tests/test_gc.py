"""`edgekit gc --target T`: a device workdir laid out by the real agent's install and activate,
plus the leftovers interrupted work leaves; gc removes those and what is old and unused, keeps the
current and previous deployments with their artifacts, and never follows a link."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from edgekit.bundle import write_agent

OLD = time.time() - 30 * 86400  # a month ago: past the default keep of 7 days


def size(path: Path) -> int:
    """Bytes at or under `path`, links as links: the independent count gc's figure is held to."""
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum((Path(d) / n).lstat().st_size for d, dirs, files in os.walk(path) for n in dirs + files)


def age(path: Path) -> None:
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(Path(folder) / name, (OLD, OLD), follow_symlinks=False)
    os.utime(path, (OLD, OLD), follow_symlinks=False)


@pytest.fixture
def device_workdir(workdir, tmp_path):
    """~/.edgekit of the local target: three variants of model m installed by the agent, v2 current,
    v1 previous, v3 never made current; leftovers of cut-off work; an outside folder behind a link."""
    agent = write_agent(tmp_path / "agent.pyz")
    root = Path.home() / ".edgekit"

    def call(*args: str) -> dict:
        done = subprocess.run([sys.executable, str(agent), *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    shas = {}
    for variant in ("v1", "v2", "v3", "unused-old", "unused-new"):
        data = f"weights of {variant}".encode() * 1000
        sha = hashlib.sha256(data).hexdigest()
        artifact = root / "artifacts" / sha / "model.onnx"
        artifact.parent.mkdir(parents=True, exist_ok=True)
        artifact.write_bytes(data)
        shas[variant] = sha
        if variant.startswith("v"):
            call("install", "--workdir", str(root), "--model", "m", "--variant", variant, "--artifact", str(artifact),
                 "--sha256", sha)
    call("activate", "--workdir", str(root), "--model", "m", "--variant", "v1")
    call("activate", "--workdir", str(root), "--model", "m", "--variant", "v2")
    for old in ("v1", "v3"):  # installed long ago; v1 is previous, so it stays anyway
        age(root / "deployments" / "m" / old)
    for old in ("v1", "v2", "v3", "unused-old"):
        age(root / "artifacts" / shas[old])
    staging = root / "deployments" / "m" / ".staging-v4-abc123"
    staging.mkdir()
    (staging / "model.onnx").write_bytes(b"half" * 100)
    upload = root / "artifacts" / shas["unused-new"] / ".model.onnx.upload-1a2b3c4d"
    upload.write_bytes(b"cut off" * 100)
    (root / "inputs").mkdir()
    (root / "inputs" / ".upload-deadbeef.npz").write_bytes(b"x" * 50)
    (root / "inputs" / "0123456789abcdef0123456789abcdef.npz").write_bytes(b"y" * 70)
    (root / "tmp").mkdir()
    (root / "tmp" / "out-0123-4567.npz").write_bytes(b"z" * 90)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("not edgekit's")
    age(outside)
    (root / "artifacts" / ("f" * 64)).symlink_to(outside)
    return root, shas, outside


def test_gc_removes_leftovers_and_old_unused_files_and_keeps_what_is_deployed(device_workdir):
    root, shas, outside = device_workdir
    expected = {
        root / "deployments/m/.staging-v4-abc123": "an install that never finished",
        root / "deployments/m/v3": "neither current nor previous",
        root / "artifacts" / shas["unused-new"] / ".model.onnx.upload-1a2b3c4d": "an upload that never finished",
        root / "artifacts" / shas["unused-old"]: "not installed",
        root / "artifacts" / shas["v3"]: "not installed",
        root / "inputs/.upload-deadbeef.npz": "an upload that never finished",
        root / "tmp/out-0123-4567.npz": "scratch output",
    }
    sizes = {path: size(path) for path in expected}

    dry = run_cli("gc", "--target", "local", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    doc = json.loads(dry.stdout)
    assert doc["dry_run"] and all(path.exists() for path in expected), "a dry run removes nothing"
    assert {Path(r["path"]) for r in doc["removed"]} == set(expected)

    done = run_cli("gc", "--target", "local", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    removed = {Path(r["path"]): r for r in doc["removed"]}
    assert set(removed) == set(expected)
    for path, why in expected.items():
        assert why in removed[path]["why"] and removed[path]["bytes"] == sizes[path] and not path.exists()
    assert doc["freed_bytes"] == sum(sizes.values())

    kept = {Path(r["path"]): r["why"] for r in doc["kept"]}
    assert kept[root / "deployments/m/v2"] == "current" and kept[root / "deployments/m/v1"] == "previous"
    for variant in ("v1", "v2"):  # old, but installed: the artifact a deployment came from stays
        assert kept[root / "artifacts" / shas[variant]] == "installed"
    assert kept[root / "artifacts" / shas["unused-new"]] == "pushed recently"
    assert (root / "inputs/0123456789abcdef0123456789abcdef.npz").exists()
    assert (outside / "precious.txt").read_text() == "not edgekit's", "a link is never followed"

    status = json.loads(run_cli("status", "--target", "local", "--json").stdout)["models"]["m"]
    assert (status["current"], status["previous"], status["installed"]) == ("v2", "v1", ["v1", "v2"])
    rolled = run_cli("rollback", "--target", "local", "--model", "m", "--json")
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout)["models"]["m"]["current"] == "v1"

    table = run_cli("gc", "--target", "local", "--keep-days", "0")  # now everything not deployed goes
    assert table.returncode == 0, table.stderr
    assert "removed" in table.stdout and "kept" in table.stdout
    assert not (root / "artifacts" / shas["unused-new"]).exists() and (root / "artifacts" / shas["v2"]).exists()


@pytest.mark.parametrize("days", ["-1", "nan", "inf"])
def test_a_bad_keep_days_is_exit_2_and_touches_nothing(device_workdir, days):
    root, shas, _ = device_workdir
    proc = run_cli("gc", "--target", "local", "--keep-days", days)
    assert proc.returncode == 2 and "--keep-days" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert (root / "deployments/m/.staging-v4-abc123").exists() and (root / "tmp/out-0123-4567.npz").exists()


def test_gc_refuses_a_workdir_that_is_not_edgekits(tmp_path):
    """gc deletes: a target whose workdir points at a home or / must not have its tmp/ emptied."""
    agent = write_agent(tmp_path / "agent.pyz")
    elsewhere = tmp_path / "home-of-someone"
    (elsewhere / "tmp").mkdir(parents=True)
    (elsewhere / "tmp" / "notes.txt").write_text("mine")
    done = subprocess.run([sys.executable, str(agent), "gc", "--workdir", str(elsewhere), "--keep-days", "0"],
                          capture_output=True, text=True, timeout=60)
    doc = json.loads(done.stdout)
    assert done.returncode == 3 and doc["error"]["kind"] == "bad_request" and "not an edgekit workdir" in \
        doc["error"]["message"]
    assert (elsewhere / "tmp" / "notes.txt").read_text() == "mine"
