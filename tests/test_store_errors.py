"""A results store that is damaged, read-only or locked: one line naming the file and the fix,
in every command, and before deploy/profile do any work. Real SQLite, a real read-only mount."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from edgekit.errors import StoreError
from edgekit.results import ResultsStore, check_store
from report_store import captured

COMMANDS = [
    ("report", "--table"), ("report", "--json"), ("check", "--target", "local"),
    ("compare", "--target", "local", "--target", "local2"),
    ("profile", "--target", "local", "--profile", "fast"), ("deploy", "--target", "local", "--profile", "fast"),
    ("rollback", "--target", "local", "--model", "digits-cnn"),
]


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_damaged_store_is_one_line_in_every_command(workdir, command):
    db = workdir / ".edgekit" / "results.db"
    db.parent.mkdir()
    db.write_bytes(os.urandom(8192))
    proc = run_cli(*command, "--db", str(db))
    one_line_error(proc, f"the results store {db} is damaged", f"Fix: move it aside (mv {db} {db}.bad)")
    assert not (workdir / ".edgekit" / "cache").exists()  # nothing was compressed first


def test_a_locked_store_stops_deploy_before_work(workdir):
    db = captured(workdir / "results.db")
    holder = sqlite3.connect(db)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write that does not end
    try:
        with pytest.raises(StoreError, match="is locked by another process.*Fix: wait for the other edgekit run"):
            check_store(db)
        proc = run_cli("deploy", "--target", "local", "--profile", "fast", "--db", str(db))
        one_line_error(proc, f"the results store {db} is locked")
        assert not (workdir / ".edgekit" / "cache").exists()
        proc = run_cli("report", "--table", "--db", str(db))  # readers are not blocked by a writer (WAL)
        assert proc.returncode == 0, proc.stderr
    finally:
        holder.rollback()
        holder.close()
    check_store(db)


def _read_only(folder: Path, *argv: str) -> subprocess.CompletedProcess:
    """argv with `folder` mounted read-only for it alone (a private mount namespace)."""
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(folder), *argv], capture_output=True,
                          text=True, timeout=600)


def test_a_read_only_store_stops_deploy_before_work(workdir, tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a read-only mount needs root and unshare")
    folder = tmp_path / "ro"
    folder.mkdir()
    db = captured(folder / "results.db")
    probe = _read_only(folder, "touch", str(folder / "x"))
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"no private read-only mount here: {probe.stderr.strip()}")
    edgekit = [sys.executable, "-m", "edgekit"]
    proc = _read_only(folder, *edgekit, "deploy", "--target", "local", "--profile", "fast", "--db", str(db))
    one_line_error(proc, f"cannot write the results store {db}", "Fix: make the file and its folder writable")
    assert not (workdir / ".edgekit" / "cache").exists()
    proc = _read_only(folder, *edgekit, "check", "--target", "local", "--db", str(db))
    assert proc.returncode in (0, 1, 2) and "Traceback" not in proc.stderr, proc.stderr


def test_store_error_kinds_without_a_cli(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))  # the right header, garbage after it
    with pytest.raises(StoreError, match=f"{bad}"):
        ResultsStore(bad)
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(StoreError, match="cannot create the results store"):
        ResultsStore(blocked / "results.db")
