"""A device behind a slow link of its own: a network namespace joined to the host by a veth pair,
the host side shaped with tc tbf (uploads from the host are what is slowed), and a link that can
be cut without its traffic leaking off the machine (an unreachable fallback route)."""

from __future__ import annotations

import os
import subprocess

import pytest

_count = [0]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Link:
    """Namespace `ns`, host side `host_dev` (10.200.N.1), device side `dev` (10.200.N.2)."""

    def __init__(self, rate: str) -> None:
        _count[0] += 1
        n = (os.getpid() % 200) + _count[0]
        self.n = n % 250 + 1
        self.ns = f"eks{os.getpid()}-{_count[0]}"
        self.host_dev, self.dev = f"ekh{self.n}x{_count[0]}", f"ekd{self.n}x{_count[0]}"
        self.subnet = f"10.200.{self.n}.0/24"
        self.address = f"10.200.{self.n}.2"
        self.rate = rate

    def up(self) -> Link:
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.host_dev, "type", "veth", "peer", "name", self.dev)
        _ip("link", "set", self.dev, "netns", self.ns)
        _ip("addr", "add", f"10.200.{self.n}.1/24", "dev", self.host_dev)
        _ip("link", "set", self.host_dev, "up")
        _ip("-n", self.ns, "addr", "add", f"{self.address}/24", "dev", self.dev)
        _ip("-n", self.ns, "link", "set", self.dev, "up")
        _ip("-n", self.ns, "link", "set", "lo", "up")
        _ip("route", "add", "unreachable", self.subnet, "metric", "4000")
        subprocess.run(["tc", "qdisc", "add", "dev", self.host_dev, "root", "tbf", "rate", self.rate,
                        "burst", "32kbit", "latency", "400ms"], check=True, capture_output=True, timeout=30)
        return self

    def cut(self) -> None:
        """Take the device side down: packets for it are dropped, nothing is refused or reset."""
        _ip("-n", self.ns, "link", "set", self.dev, "down")

    def down(self) -> None:
        for args in (["link", "del", self.host_dev], ["netns", "del", self.ns],
                     ["route", "del", "unreachable", self.subnet, "metric", "4000"]):
            subprocess.run(["ip", *args], capture_output=True, timeout=30)


def shaped(ssh_devices, persona: str, rate: str):
    """A started test device reachable only over a link shaped to `rate`; skips where namespaces or
    tc are not permitted. Returns (device, link); the caller's fixture takes the link down."""
    link = Link(rate)
    try:
        link.up()
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        link.down()
        pytest.skip(f"network namespaces or tc tbf are not permitted here: {exc}")
    device = ssh_devices(persona, run=False)
    loopback = device.address
    device.address, device.netns = link.address, link.ns
    device.write_config()
    # register() wrote the loopback address: point the alias and known_hosts at the namespace.
    home = os.environ["HOME"]
    for name in (".ssh/config", ".ssh/known_hosts"):
        path = os.path.join(home, name)
        text = open(path).read()
        open(path, "w").write(text.replace(loopback, link.address))
    device.start()
    return device, link
