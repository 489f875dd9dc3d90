"""The agent's device lock and verified placement, run as the real zipapp (on Python 3.8 when present)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from devices import pyenv_python
from edgekit.bundle import write_agent

PYTHONS = [sys.executable] + ([pyenv_python("3.8")] if pyenv_python("3.8") else [])


@pytest.fixture
def agent(tmp_path):
    return write_agent(tmp_path / "edgekit-agent.pyz")


def call(python: str, agent, *args: str) -> tuple[int, dict]:
    proc = subprocess.run([python, str(agent), *args], capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("python", PYTHONS)
def test_accept_renames_only_a_verified_upload(python, agent, tmp_path):
    upload, dest = tmp_path / ".model.onnx.upload-1", tmp_path / "model.onnx"
    upload.write_bytes(b"weights")
    code, doc = call(python, agent, "accept", "--source", str(upload), "--dest", str(dest), "--sha256", "0" * 64)
    assert code == 3 and doc["error"]["kind"] == "artifact_corrupt"
    assert not upload.exists() and not dest.exists()  # a bad upload is deleted, never placed

    upload.write_bytes(b"weights")
    cut_off = tmp_path / ".model.onnx.upload-0ld"  # an earlier upload that a lost link cut off
    cut_off.write_bytes(b"wei")
    digest = hashlib.sha256(b"weights").hexdigest()
    code, doc = call(python, agent, "accept", "--source", str(upload), "--dest", str(dest), "--sha256", digest)
    assert code == 0 and dest.read_bytes() == b"weights" and not upload.exists()
    assert not cut_off.exists(), "an accepted upload takes the cut-off ones beside it away"


@pytest.mark.parametrize("python", PYTHONS)
def test_lock_is_exclusive_names_its_holder_and_dies_with_it(python, agent, tmp_path):
    workdir = str(tmp_path / "wd")
    holder = subprocess.Popen([python, str(agent), "lock", "--workdir", workdir, "--holder", "alice@host pid 1"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(holder.stdout.readline())
        assert first["acquired"] and first["holder"] == "alice@host pid 1"
        code, doc = call(python, agent, "lock", "--workdir", workdir, "--holder", "bob", "--wait-s", "0.3")
        assert code == 3 and doc["error"]["kind"] == "busy"
        assert doc["error"]["message"].startswith("busy, held by alice@host pid 1 since ")
        assert call(python, agent, "lock-status", "--workdir", workdir)[1]["held"] is True
    finally:
        holder.kill()  # dies without releasing: the kernel drops the flock
        holder.wait(10)
    assert call(python, agent, "lock-status", "--workdir", workdir)[1]["held"] is False
    second = subprocess.Popen([python, str(agent), "lock", "--workdir", workdir, "--holder", "bob"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert json.loads(second.stdout.readline())["acquired"]
    second.stdin.close()  # the normal release: end of stdin
    assert second.wait(10) == 0


@pytest.mark.parametrize("python", PYTHONS)
def test_accept_deletes_only_an_upload_never_another_path(python, agent, tmp_path):
    """A failed check deletes the source; so the source must be an upload's temporary name, and a
    link named like one is left alone (unlink would remove the link, not what it points to, but
    nothing of a link is edgekit's to remove)."""
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    code, doc = call(python, agent, "accept", "--source", str(precious), "--dest", str(tmp_path / "d"),
                     "--sha256", "0" * 64)
    assert code == 3 and doc["error"]["kind"] == "bad_request" and precious.read_text() == "keep"
    link = tmp_path / ".m.onnx.upload-2"
    link.symlink_to(precious)
    code, doc = call(python, agent, "accept", "--source", str(link), "--dest", str(tmp_path / "d"),
                     "--sha256", "0" * 64)
    assert code == 3 and link.is_symlink() and precious.read_text() == "keep"
