"""Uploads over a slow link (a network namespace behind tc tbf, tests/links.py), against a real
sshd device: an interrupt stops the run where it is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from links import shaped
from test_ssh_devices import edgekit  # noqa: F401 - the fixture


@pytest.fixture
def slow(ssh_devices):
    links = []

    def make(rate: str = "256kbit"):
        device, link = shaped(ssh_devices, "jetson-like", rate)
        device._link = link
        links.append(link)
        return device

    yield make
    for link in links:
        link.down()


@pytest.fixture(autouse=True)
def _no_run_left_behind():
    """A test that fails before its `edgekit` run ends kills that run (a child of this process)."""
    yield
    for child in psutil.Process().children():
        try:
            if "edgekit" in child.cmdline() and child.is_running():
                child.kill()
                child.wait(10)
        except psutil.Error:
            continue


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """The run's output; a run that does not end in time is killed, not left behind."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


def _parts(device) -> list:
    root = device.device_path(".edgekit/artifacts")
    return [p for p in root.rglob("*") if p.is_file() and ".part" in p.name] if root.exists() else []


def _deploy_until_uploading(jetson, edgekit, at_least: int) -> subprocess.Popen:  # noqa: F811
    """`edgekit deploy` in its own process, returned once an artifact upload on the device holds
    `at_least` bytes (the run still going)."""
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "deploy", "--target", "jetson-like", "--profile",
                             "fast", *edgekit.home_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.stat().st_size > at_least for p in _parts(jetson)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    assert _parts(jetson), "no artifact upload was seen under way"
    return proc


def test_ctrl_c_during_an_upload_stops_the_deploy_with_130_and_installs_nothing(slow, workdir, edgekit):  # noqa: F811
    jetson = slow()
    proc = _deploy_until_uploading(jetson, edgekit, 16_000)
    proc.send_signal(signal.SIGINT)
    out, err = _finish(proc, 60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: interrupted"), err
    deployments = jetson.device_path(".edgekit/deployments")
    assert not deployments.exists() or not any(deployments.rglob("*")), list(deployments.rglob("*"))
    # One connection for the whole run: it was not re-opened after the interrupt.
    time.sleep(0.5)
    assert jetson.log.read_text().count("Accepted publickey") == 1, jetson.log.read_text()[-3000:]


def test_an_upload_on_a_dead_link_stops_after_the_stall_time_naming_file_and_bytes(slow, workdir, edgekit,  # noqa: F811
                                                                                    monkeypatch):
    monkeypatch.setenv("EDGEKIT_STALL_S", "3")
    jetson = slow()
    link = jetson._link
    proc = _deploy_until_uploading(jetson, edgekit, 16_000)
    link.cut()
    cut = time.monotonic()
    out, err = _finish(proc, 120)
    took = time.monotonic() - cut
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "target jetson-like" in last and "no progress for 3s after" in last and " bytes" in last, err
    assert ".onnx" in last or "model" in last, last
    assert took < 3 + 10, took


def test_a_cut_off_upload_is_continued_by_the_next_run_and_verified(slow, workdir, edgekit, built):  # noqa: F811
    import hashlib

    from edgekit.config import load_target
    from edgekit.device import connect, holder_name

    jetson = slow()
    proc = _deploy_until_uploading(jetson, edgekit, 40_000)
    proc.send_signal(signal.SIGINT)
    _finish(proc, 60)
    assert proc.returncode == 130
    (part,) = [p for p in _parts(jetson)]
    # Writes already on the wire when the host let go still land: wait until the file stops growing.
    have, since = part.stat().st_size, time.monotonic()
    while time.monotonic() - since < 1.5:
        time.sleep(0.1)
        if part.stat().st_size != have:
            have, since = part.stat().st_size, time.monotonic()
    variant = next(v for v in built[1].values() if v.sha256 == part.parent.name)
    total = os.path.getsize(variant.path)
    assert 0 < have < total
    events: list[tuple[str, int, int]] = []
    with connect(load_target("jetson-like")) as device, device.locked(holder_name("test")):
        device.on_upload = lambda label, sent, size: events.append((label, sent, size))
        remote = device.push(variant)
    sent = [s for label, s, _ in events if label == variant.file]
    # This run started where the last one stopped: its first report is past the cut-off bytes,
    # and it sent only what was missing.
    assert sent and sent[0] > have and sent[0] - have <= 1 << 15 and sent[-1] == total, (have, sent[:3])
    on_device = jetson.device_path(remote)
    assert hashlib.sha256(on_device.read_bytes()).hexdigest() == variant.sha256
    assert not _parts(jetson)


def test_a_slow_link_that_still_moves_is_never_taken_for_a_dead_one(slow, workdir, monkeypatch, tmp_path):
    """Bytes handed to the socket are not bytes on the device: what sits in buffers takes time to
    cross a slow link, and the stall watchdog must see the device's progress, not the host's."""
    from edgekit.config import load_target
    from edgekit.device import connect

    monkeypatch.setenv("EDGEKIT_STALL_S", "2")
    jetson = slow("256kbit")  # 32 kB/s: the file below takes about 12 s
    local = tmp_path / "blob.bin"
    local.write_bytes(os.urandom(384 * 1024))
    reports: list[tuple[float, int]] = []
    with connect(load_target("jetson-like")) as device:
        remote = f"{device.target.workdir}/blob.bin"
        device.transport.put(str(local), remote, lambda sent, total: reports.append((time.monotonic(), sent)))
    assert jetson.device_path(".edgekit/blob.bin").read_bytes() == local.read_bytes()
    # Progress is reported as the device takes the bytes, never far ahead of it.
    gaps = [b[0] - a[0] for a, b in zip(reports, reports[1:])]
    assert reports[-1][1] == 384 * 1024 and max(gaps) < 2, gaps
    assert reports[-1][0] - reports[0][0] > 5, "the reports covered the transfer, not just the buffering"
