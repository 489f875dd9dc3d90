"""Shared fixtures: an isolated HOME and cwd per test, one trained example model per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FAST_PROFILE = """
[build]
recipes = ["onnx:fp32", "onnx:int8-static"]
[bench]
warmup_s = 0.05
min_runs = 20
min_s = 0.1
max_s = 5.0
[select]
objective = "p90_ms"
constraints = { max_accuracy_drop = 0.01 }
"""


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """Trained example weights shared by the whole session (training takes seconds, once)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def workdir(tmp_path, monkeypatch, model_cache) -> Path:
    """A fresh cwd and HOME: the local device's ~/.edgekit and the host's .edgekit live here."""
    home = tmp_path / "home"
    home.mkdir()
    project = tmp_path / "project"
    (project / "profiles").mkdir(parents=True)
    (project / "profiles" / "fast.toml").write_text(FAST_PROFILE)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("EDGEKIT_CACHE", str(model_cache))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(project)
    return project


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real `edgekit` command in a subprocess: real exit codes, real stdout/stderr."""
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True,
                          cwd=cwd or os.getcwd(), env=dict(os.environ), timeout=600)


@pytest.fixture(scope="session")
def built(tmp_path_factory, model_cache):
    """The example compressed once: (BuildContext, {recipe: Variant})."""
    from edgekit.examples import digits
    from edgekit.pipeline import Workspace, compress, prepare

    old = os.environ.get("EDGEKIT_CACHE")
    os.environ["EDGEKIT_CACHE"] = str(model_cache)
    try:
        ctx = prepare(digits.spec())
        home = tmp_path_factory.mktemp("host")
        variants = compress(ctx, ("onnx:fp32", "onnx:int8-static"), Workspace(home, home / "results.db"))
    finally:
        if old is None:
            os.environ.pop("EDGEKIT_CACHE")
        else:
            os.environ["EDGEKIT_CACHE"] = old
    return ctx, {v.recipe: v for v, _ in variants}


@pytest.fixture
def ssh_devices(workdir):
    """Factory for real SSH test devices (tests/devices.py): `start("jetson-like", **target_keys)`.

    Each device is registered with the isolated HOME (~/.ssh/config alias, known_hosts) and the
    project (targets/NAME.toml); every sshd is killed and its folder removed at the end, pass or fail.
    """
    import shutil

    from devices import PERSONAS, SSHD, TestDevice, device_base

    if not os.path.exists(SSHD):
        pytest.skip("openssh-server is not installed (./scripts/test installs it)")
    if os.geteuid() != 0:
        pytest.skip("test devices need root: useradd and private mount namespaces")
    started: list = []

    def start(persona: str, name: str | None = None, trust: bool = True, run: bool = True, **target):
        device = TestDevice(PERSONAS[persona], device_base(persona))
        started.append(device)
        if run:
            device.start()
        device.register(Path(os.environ["HOME"]), workdir, name=name, trust=trust, **target)
        return device

    yield start
    for device in started:
        device.stop()
        shutil.rmtree(device.base, ignore_errors=True)
