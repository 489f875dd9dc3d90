"""ProxyJump as OpenSSH reads it (ssh_config(5)): a chain `a,b` hops through a, then b, then the
target, each hop with its own ~/.ssh/config entry and its host key checked; a malformed value is
an exit-2 error naming the key. The chain test runs three real sshd devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli
from edgekit.errors import SpecError, TransportError
from edgekit.transport.ssh import Hop, SSHTransport, parse_proxy_jump, resolve


@pytest.mark.parametrize("value, hops", [
    ("pi", [Hop("pi")]),
    ("me@pi:2222", [Hop("pi", "me", 2222)]),
    ("a, b@c:22 ,d", [Hop("a"), Hop("c", "b", 22), Hop("d")]),
    ("ssh://me@gw.example.org:2200", [Hop("gw.example.org", "me", 2200)]),
    ("[fe80::1]:22,[::1]", [Hop("fe80::1", None, 22), Hop("::1")]),
])
def test_chains_parse_in_the_order_ssh_takes_them(value, hops):
    assert parse_proxy_jump(value, "cfg") == hops
    assert parse_proxy_jump(",".join(str(h) for h in hops), "cfg") == hops  # what a hop passes on reads back


@pytest.mark.parametrize("value, problem", [
    ("h:abc", "has port 'abc'"), ("h:0", "has port '0'"), ("h:70000", "has port '70000'"),
    ("a,,b", "names no host"), ("me@", "names no host"), ("a b", "is not [user@]host[:port]"),
])
def test_a_malformed_value_names_the_key_the_value_and_the_file(value, problem):
    with pytest.raises(SpecError) as info:
        parse_proxy_jump(value, "/home/me/.ssh/config (Host pi)")
    message = str(info.value)
    assert f"/home/me/.ssh/config (Host pi): ProxyJump {value!r}: " in message and problem in message
    assert "Fix: write ProxyJump [user@]host[:port]" in message


def write_config(text: str) -> None:
    ssh = Path.home() / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "config").write_text(text)


@pytest.mark.parametrize("line, words", [("ProxyJump gw:abc", "ProxyJump 'gw:abc'"),
                                         ("Port 22x", "Port '22x' for board is not a port number")])
def test_a_malformed_ssh_config_is_exit_2_before_any_connection(workdir, line, words):
    write_config(f"Host board\n  HostName 192.0.2.1\n  {line}\n")
    (workdir / "targets").mkdir()
    (workdir / "targets" / "board.toml").write_text('transport = "ssh"\nhost = "board"\n')
    with pytest.raises(SpecError):
        resolve("board")
    proc = run_cli("targets", "check", "board")
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(Path.home() / ".ssh" / "config") in errors[0]


def test_a_chain_hops_through_every_host_in_order(ssh_devices):
    """jetson-like through phone-like then pi-like: three real sshd. Taking either hop down breaks
    the connection, naming that hop, so both were on the path."""
    jetson = ssh_devices("jetson-like")
    pi = ssh_devices("pi-like")
    phone = ssh_devices("phone-like")
    config = Path.home() / ".ssh" / "config"
    config.write_text(config.read_text().replace("Host jetson-like\n",
                                                 "Host jetson-like\n  ProxyJump phone-like,pi-like\n"))

    def who() -> str:
        tr = SSHTransport("jetson-like", "jetson-like", connect_timeout=3, retries=1).open()
        try:
            assert tr.endpoint.proxy_jump == "phone-like,pi-like"
            return tr.run(["id", "-un"], timeout=30).stdout.strip()
        finally:
            tr.close()

    assert who() == jetson.persona.user
    for hop in (phone, pi):
        hop.stop()
        try:
            with pytest.raises(TransportError) as info:
                who()
            assert hop.persona.name in str(info.value), str(info.value)
        finally:
            hop.start()
    assert who() == jetson.persona.user
