"""No file operation of the agent follows a link someone left in its way; what it and the
transports create is private; the agent file is hash-checked before it runs; scratch files go.

Real files, real links, the real zipapp (on Python 3.8 too when present), a real local device."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from devices import pyenv_python
from edgekit.bundle import agent_zipapp, write_agent

PYTHONS = [sys.executable] + ([pyenv_python("3.8")] if pyenv_python("3.8") else [])
PY38_SITE = Path(__file__).resolve().parent.parent / ".venv" / "py38-site"  # numpy + onnxruntime (scripts/test)


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Path:
    return write_agent(tmp_path_factory.mktemp("agent") / "edgekit-agent.pyz")


@pytest.fixture(scope="module")
def relu(tmp_path_factory) -> tuple[Path, str]:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path_factory.mktemp("model") / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7), str(path))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def call(python: str, agent: Path, *args: str) -> tuple[int, dict]:
    env = dict(os.environ, PYTHONPATH=str(PY38_SITE)) if python != sys.executable else None
    proc = subprocess.run([python, str(agent), *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=env)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "precious.txt"
    path.write_text("someone else's data\n")
    return path


def hold(python: str, agent: Path, workdir: Path) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([python, str(agent), "lock", "--workdir", str(workdir), "--holder", "me"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())


@pytest.mark.parametrize("python", PYTHONS)
def test_a_link_at_the_lock_path_is_refused_and_its_target_untouched(python, agent, tmp_path):
    target = victim(tmp_path)
    workdir = tmp_path / "wd"
    workdir.mkdir(mode=0o700)
    (workdir / "lock").symlink_to(target)
    proc, doc = hold(python, agent, workdir)
    proc.wait(30)
    assert proc.returncode == 3 and doc["error"]["kind"] == "bad_request", doc
    assert "symbolic link" in doc["error"]["message"] and "remove it" in doc["error"]["message"]
    assert target.read_text() == "someone else's data\n"
    code, status = call(python, agent, "lock-status", "--workdir", str(workdir))
    assert code == 3 and status["error"]["kind"] == "bad_request"

    (workdir / "lock").unlink()  # a dangling link: O_CREAT alone would create its target
    (workdir / "lock").symlink_to(tmp_path / "created-through-the-link")
    proc, doc = hold(python, agent, workdir)
    proc.wait(30)
    assert "error" in doc and not (tmp_path / "created-through-the-link").exists()

    (workdir / "lock").unlink()  # a hard link shares the victim's inode: truncating it truncates both
    os.link(target, workdir / "lock")
    proc, doc = hold(python, agent, workdir)
    proc.wait(30)
    assert "error" in doc and target.read_text() == "someone else's data\n"


@pytest.mark.parametrize("python", PYTHONS)
def test_the_lock_and_its_workdir_are_private(python, agent, tmp_path):
    workdir = tmp_path / "new" / "wd"
    proc, doc = hold(python, agent, workdir)
    try:
        assert doc["acquired"], doc
        assert mode(workdir) == 0o700 and mode(workdir.parent) == 0o700 and mode(workdir / "lock") == 0o600
    finally:
        proc.stdin.close()
        proc.wait(30)


@pytest.mark.parametrize("python", PYTHONS)
def test_run_outputs_replace_a_link_instead_of_writing_through_it(python, agent, relu, tmp_path):
    if python != sys.executable and not (PY38_SITE / "onnxruntime").is_dir():
        pytest.skip("no numpy + onnxruntime for python3.8 (scripts/test installs them into .venv/py38-site)")
    model, sha = relu
    np.savez(tmp_path / "in.npz", x=np.array([[[-1.0, 2.0, -3.0, 4.0]]], dtype=np.float32))
    target = victim(tmp_path)
    out = tmp_path / "out.npz"
    out.symlink_to(target)
    code, doc = call(python, agent, "run", "--artifact", str(model), "--runtime", "onnxruntime", "--sha256", sha,
                     "--inputs", str(tmp_path / "in.npz"), "--outputs", str(out))
    assert code == 0, doc
    assert target.read_text() == "someone else's data\n"
    assert not out.is_symlink() and mode(out) == 0o600
    with np.load(out) as arrays:
        assert arrays["output_0"].tolist() == [[[0.0, 2.0, 0.0, 4.0]]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "out.npz", "precious.txt"]  # no temp left


@pytest.mark.parametrize("python", PYTHONS)
def test_install_is_private_and_never_reads_or_writes_through_links(python, agent, relu, tmp_path):
    model, sha = relu
    workdir = tmp_path / "wd"
    code, doc = call(python, agent, "install", "--workdir", str(workdir), "--model", "m", "--variant", "v1",
                     "--artifact", str(model), "--sha256", sha)
    assert code == 0, doc
    placed = Path(doc["path"])
    assert mode(placed) == 0o600 and mode(placed.parent / "deployment.json") == 0o600
    assert mode(workdir / "deployments" / "m") == 0o700 and mode(workdir / "deployments") == 0o700
    assert not [p for p in (workdir / "deployments" / "m").iterdir() if p.name.startswith(".staging")]
    cut_off = workdir / "deployments" / "m" / ".staging-v0-x1y2z3"  # an install killed half-way
    cut_off.mkdir()
    (cut_off / "model.onnx").write_bytes(b"half")
    code, doc = call(python, agent, "install", "--workdir", str(workdir), "--model", "m", "--variant", "v0",
                     "--artifact", str(model), "--sha256", sha)
    assert code == 0 and not cut_off.exists(), "the next install clears what a cut-off one staged"

    link = tmp_path / "link.onnx"  # an artifact path that is a link is not the pushed file
    link.symlink_to(model)
    code, doc = call(python, agent, "install", "--workdir", str(workdir), "--model", "m", "--variant", "v2",
                     "--artifact", str(link), "--sha256", sha)
    assert code == 3 and doc["error"]["kind"] == "artifact_corrupt" and "symbolic link" in doc["error"]["message"]


def test_the_workdir_must_belong_to_the_agents_user(agent, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to make a folder owned by someone else")
    workdir = tmp_path / "theirs"
    workdir.mkdir()
    os.chown(workdir, 65534, 65534)
    proc, doc = hold(sys.executable, agent, workdir)
    proc.wait(30)
    assert doc["error"]["kind"] == "bad_request" and "belongs to uid 65534" in doc["error"]["message"]


# --------------------------------------------------------------------------- the host side, local device


def local_device(home: Path):
    from edgekit.device import Device
    from edgekit.config import load_target
    from edgekit.transport.local import LocalTransport

    return Device(load_target("local"), LocalTransport(home))


def test_local_put_is_private(workdir, tmp_path):
    from edgekit.transport.local import LocalTransport

    home = Path(os.environ["HOME"])
    src = tmp_path / "blob"
    src.write_bytes(b"x" * 1000)
    LocalTransport(home).put(str(src), "a/b/blob")
    assert mode(home / "a/b/blob") == 0o600 and mode(home / "a/b") == 0o700 and mode(home / "a") == 0o700
    assert os.listdir(home / "a/b") == ["blob"]


def test_a_replaced_agent_file_is_pushed_again_before_it_runs(workdir, tmp_path):
    home = Path(os.environ["HOME"])
    device = local_device(home)
    fake = home / device.agent_path
    fake.parent.mkdir(parents=True)
    marker = tmp_path / "RAN"
    # The right name, other bytes: an old or tampered copy that would run code and answer "version".
    fake.write_text(f"open({str(marker)!r}, 'w').close()\n"
                    f"print('{{\"schema\": 1, \"command\": \"version\", \"agent\": \"1\"}}')\n")
    device.ensure_agent()
    assert fake.read_bytes() == agent_zipapp()[0] and mode(fake) == 0o600
    assert not marker.exists()
    assert device.agent("version")["agent"] == "1"


def test_device_run_removes_its_scratch_files(workdir, relu):
    from edgekit.records import Variant

    model, sha = relu
    home = Path(os.environ["HOME"])
    device = local_device(home)
    variant = Variant(id="relu-1", recipe="onnx:fp32", format="onnx", precision="fp32", runtime="onnxruntime",
                      model="m", file=model.name, sha256=sha, size_bytes=model.stat().st_size, path=str(model))
    remote = device.push(variant)
    outs = device.run(variant, remote, [{"x": np.array([[-1.0, 1.0, 2.0, -2.0]], dtype=np.float32)}])
    assert outs[0].tolist() == [[[0.0, 1.0, 2.0, 0.0]]]
    assert os.listdir(home / ".edgekit" / "tmp") == []
