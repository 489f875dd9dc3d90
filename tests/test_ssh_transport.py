"""The SSH transport against real OpenSSH servers: commands, files, host keys, auth, faults."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from edgekit.errors import DeviceError, TransportError
from edgekit.transport.ssh import SSHTransport


def transport(name: str, **kw) -> SSHTransport:
    kw.setdefault("connect_timeout", 5)
    return SSHTransport(name, name, **kw)


def test_run_passes_every_argument_verbatim(ssh_devices):
    device = ssh_devices("jetson-like")
    tr = transport("jetson-like").open()
    try:
        marker = Path(f"/tmp/PWNED-{uuid.uuid4().hex}")
        tricky = ["a b", "$(touch {})".format(marker), "`touch {}`".format(marker), "x; touch {}".format(marker),
                  "'quoted'", '"dq"', "*", "~", "$HOME", "new\nline", ""]
        done = tr.run(["printf", "%s|", *tricky], timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "".join(f"{t}|" for t in tricky)
        assert not marker.exists()
        done = tr.run(["sh", "-c", "pwd; echo $PATH; exit 7"], timeout=30)
        pwd, path = done.stdout.split()
        assert done.returncode == 7 and pwd == device.persona.login_dir and device.python.rsplit("/", 2)[0] in path
    finally:
        tr.close()


def test_files_are_relative_to_the_login_dir_and_atomic(ssh_devices, tmp_path):
    device = ssh_devices("phone-like")  # Termux-style home and port 8022
    assert device.port == 8022
    tr = transport("phone-like").open()
    try:
        src = tmp_path / "blob.bin"
        src.write_bytes(os.urandom(300_000))
        tr.put(str(src), "~/deep/er/blob.bin")
        on_device = device.device_path("deep/er/blob.bin")
        assert on_device.read_bytes() == src.read_bytes()
        assert os.listdir(on_device.parent) == ["blob.bin"]  # no temporary file left behind
        # private on the device, as the local transport makes them: files 0600, the folders it made 0700
        assert on_device.stat().st_mode & 0o777 == 0o600
        assert [(on_device.parent / d).stat().st_mode & 0o777 for d in ("..", ".")] == [0o700, 0o700]
        assert tr.exists("deep/er/blob.bin") and not tr.exists("deep/er/nothing")
        back = tmp_path / "back.bin"
        tr.get("deep/er/blob.bin", str(back))
        assert back.read_bytes() == src.read_bytes()
        with pytest.raises(TransportError, match="does not exist"):
            tr.get("deep/er/nothing", str(tmp_path / "x"))
    finally:
        tr.close()


def test_unknown_host_key_is_refused_until_trusted(ssh_devices):
    ssh_devices("jetson-like", trust=False)
    with pytest.raises(TransportError) as info:
        transport("jetson-like").open()
    message = str(info.value)
    assert "is not known" in message and "edgekit targets trust jetson-like" in message and "SHA256:" in message
    assert "\n" not in message


def test_changed_host_key_is_refused_as_possible_interception(ssh_devices, tmp_path):
    device = ssh_devices("jetson-like")
    # Another key under the same name, as if someone else answered at this address.
    import paramiko

    impostor = paramiko.Ed25519Key.from_private_key_file(str(device.client_key))
    known = Path.home() / ".ssh" / "known_hosts"
    known.write_text(f"[{device.address}]:{device.port} ssh-ed25519 {impostor.get_base64()}\n")
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        transport("jetson-like", retries=3).open()
    message = str(info.value)
    assert "CHANGED" in message and "possible interception" in message and "ssh-keygen -R" in message
    assert time.monotonic() - started < 5  # never retried


def test_failed_authentication_is_not_retried(ssh_devices, tmp_path):
    device = ssh_devices("pi-like")
    (device.base / "authorized_keys").write_text("")  # the device no longer accepts our key
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        transport("pi-like", retries=3).open()
    message = str(info.value)
    assert "authentication failed as ekd-pi@" in message and "ssh-copy-id" in message and "never" in message
    assert time.monotonic() - started < 5


def test_wrong_port_names_the_port(ssh_devices):
    device = ssh_devices("jetson-like")
    tr = SSHTransport("jetson-like", "jetson-like", port=device.port + 1 if device.port < 65535 else 1024,
                      connect_timeout=2)
    with pytest.raises(TransportError, match=r"refused the connection on port \d+.*Fix: check port"):
        tr.open()


def test_unreachable_host_times_out_after_bounded_retries(workdir):
    """A host that never answers: a listener whose backlog is full drops every new SYN."""
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(0)
    port = sink.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue so further connection attempts are dropped
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.2)
        tr = SSHTransport("gone", "127.0.0.1", port=port, connect_timeout=0.5, retries=2)
        started = time.monotonic()
        with pytest.raises(TransportError) as info:
            tr.open()
        assert time.monotonic() - started < 15
        message = str(info.value)
        assert "tried 2 times" in message and "Fix: check the device is powered" in message
    finally:
        for s in fillers:
            s.close()
        sink.close()


def test_ssh_config_proxyjump_reaches_a_device_through_another(ssh_devices):
    """ProxyJump: the jetson is reached through the pi's sshd (its direct-tcpip forwarding)."""
    jetson = ssh_devices("jetson-like")
    ssh_devices("pi-like")
    config = Path.home() / ".ssh" / "config"
    config.write_text(config.read_text().replace(
        f"Host jetson-like\n", f"Host jetson-like\n  ProxyJump pi-like\n"))
    tr = transport("jetson-like").open()
    try:
        assert tr.endpoint.proxy_jump == "pi-like"
        done = tr.run(["id", "-un"], timeout=30)
        assert done.stdout.strip() == jetson.persona.user
    finally:
        tr.close()


def test_connection_dropped_mid_upload_leaves_nothing_and_a_retry_succeeds(ssh_devices, tmp_path):
    device = ssh_devices("jetson-like")
    src = tmp_path / "big.bin"
    with open(src, "wb") as fh:
        fh.write(os.urandom(1 << 20) * 48)  # 48 MiB: long enough to be cut in the middle
    tr = transport("jetson-like").open()
    failure: list[BaseException] = []

    def upload():
        try:
            tr.put(str(src), "artifacts/big.bin")
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            failure.append(exc)

    thread = threading.Thread(target=upload)
    thread.start()
    folder = device.device_path("artifacts")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until bytes are arriving, then pull the plug
        parts = list(folder.glob(".big.bin*.part")) if folder.is_dir() else []
        if parts and parts[0].stat().st_size > (4 << 20):
            break
        time.sleep(0.01)
    device.stop()
    thread.join(60)
    assert failure and isinstance(failure[0], TransportError), failure
    assert "connection" in str(failure[0]) and "lost" in str(failure[0])
    assert not (folder / "big.bin").exists()  # nothing half-installed under the real name

    device.start()
    tr.put(str(src), "artifacts/big.bin")  # the same transport reconnects
    assert (folder / "big.bin").stat().st_size == src.stat().st_size
    tr.close()


def test_run_timeout_and_a_killed_command(ssh_devices):
    ssh_devices("jetson-like")
    tr = transport("jetson-like").open()
    try:
        with pytest.raises(DeviceError) as info:
            tr.run(["sleep", "30"], timeout=1)
        assert info.value.kind == "timeout"
        done = tr.run(["sh", "-c", "kill -9 $$"], timeout=30)
        assert done.returncode != 0 and "signal" in done.stderr
        assert tr.run(["true"], timeout=30).returncode == 0  # the connection is still usable
    finally:
        tr.close()


def test_the_in_flight_window_follows_the_measured_rate():
    """Pure sizing: a window takes about stall_s / 4 (at most 1 s) of the rate seen at the last
    acknowledgement, grows at most 4x per step, and stays within one request and 16 MB."""
    from edgekit.transport.ssh import CHUNK, InFlight

    now = [0.0]
    w = InFlight(stall_s=60, clock=lambda: now[0])
    assert w.size == CHUNK and w.target_s == 1.0
    w.sent(CHUNK, confirmed=False)
    assert w.unconfirmed == CHUNK
    now[0] += 0.001  # 64 kB acknowledged in 1 ms: a fast link, but growth is capped at 4x
    w.sent(CHUNK, confirmed=True)
    assert w.size == 4 * CHUNK and w.unconfirmed == 0
    for _ in range(10):
        now[0] += 0.001
        w.sent(w.size, confirmed=True)
    assert w.size == InFlight.MAX
    now[0] += 100.0  # then 16 MB took 100 s: 160 kB/s, so about 1 s of it
    w.sent(w.size, confirmed=True)
    assert abs(w.size - InFlight.MAX / 100) < 1
    now[0] += 1000.0  # a crawl never shrinks it below one request
    w.sent(CHUNK, confirmed=True)
    assert w.size == CHUNK
    assert InFlight(stall_s=2).target_s == 0.5
