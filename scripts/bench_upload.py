#!/usr/bin/env python3
"""Uploads over SSH: edgekit's `SSHTransport.put` against paramiko's own `SFTPClient.put`, on the
same connection to a real sshd test device (tests/devices.py; needs root).

edgekit's upload waits for the device's acknowledgement every `InFlight.size` bytes (sized to
about a second of the measured rate), so that its progress and its stall watchdog count bytes
on the device rather than bytes in buffers. This measures what that costs in throughput, and what
it buys: how long each upload's progress sat at 100 % before the upload had really finished, and
the longest gap between two progress reports.

Links: loopback, and a device in its own network namespace behind a `tc tbf`-shaped veth
(tests/links.py; netem is not available on every kernel, so no added delay). Pairs A B, then B A.
Writes its section of BENCHMARKS.md. Usage: .venv/bin/python scripts/bench_upload.py [--reps N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from benchlib import OtherLoad, command_line, write_section  # noqa: E402

LINKS = [("loopback", None, 64 << 20), ("tbf 8 Mbit/s", "8mbit", 4 << 20), ("tbf 1 Mbit/s", "1mbit", 1 << 20)]


class Timing:
    """One upload: wall seconds, seconds its progress showed 100 % before it returned, longest gap."""

    def __init__(self) -> None:
        self.reports: list[float] = []
        self.full_at: float | None = None

    def progress(self, sent: int, total: int) -> None:
        now = time.perf_counter()
        self.reports.append(now)
        if sent >= total and self.full_at is None:
            self.full_at = now

    def run(self, upload) -> tuple[float, float, float]:
        start = time.perf_counter()
        self.reports.append(start)
        upload(self.progress)
        end = time.perf_counter()
        gaps = [b - a for a, b in zip(self.reports, self.reports[1:])] or [end - start]
        return end - start, end - (self.full_at or end), max(gaps)


def measure(name: str, rate: str | None, size: int, reps: int, home: Path, project: Path,
            scratch: Path) -> dict[str, list[tuple[float, float, float]]]:
    from devices import PERSONAS, TestDevice, device_base
    from links import Link

    from edgekit.config import load_target
    from edgekit.device import connect

    link = Link(rate).up() if rate else None
    device = TestDevice(PERSONAS["jetson-like"], device_base(f"bench-upload-{len(name)}"))
    try:
        if link is not None:
            device.address, device.netns = link.address, link.ns
            device.write_config()
        device.start()
        target_name = device.register(home, project, name=f"up{len(name)}{rate or 'lo'}")
        local = scratch / f"blob-{size}.bin"
        local.write_bytes(os.urandom(size))
        got: dict[str, list[tuple[float, float, float]]] = {"edgekit": [], "paramiko": []}
        with connect(load_target(target_name)) as dev:
            transport = dev.transport
            transport.open()
            sftp = transport._sftp_client()
            base = f"{dev.target.workdir}/bench"
            seed = scratch / "seed.bin"
            seed.write_bytes(b"x")
            transport.put(str(seed), f"{base}/seed.bin")  # makes the folder for both

            def ours(progress, i=[0]):
                i[0] += 1
                transport.put(str(local), f"{base}/ours-{i[0]}.bin", progress)

            def theirs(progress, i=[0]):
                i[0] += 1
                remote = transport._rel(f"{base}/theirs-{i[0]}.bin")
                sftp.put(str(local), remote, callback=progress, confirm=True)

            for rep in range(reps):
                order = [("edgekit", ours), ("paramiko", theirs)]
                for label, upload in order if rep % 2 == 0 else order[::-1]:
                    got[label].append(Timing().run(upload))
                print(f"{name} pair {rep + 1}/{reps}: " + ", ".join(f"{k} {v[-1][0]:.2f}s" for k, v in got.items()),
                      flush=True)
        return got
    finally:
        device.stop()
        shutil.rmtree(device.base, ignore_errors=True)
        if link is not None:
            link.down()


def table(results: dict[str, tuple[int, dict]], reps: int, load: OtherLoad, command: str) -> str:
    rows = []
    for name, (size, got) in results.items():
        ours, theirs = got["edgekit"], got["paramiko"]
        ratios = [a[0] / b[0] for a, b in zip(ours, theirs)]
        med = statistics.median
        rows.append(f"| {name} | {size / (1 << 20):g} | {med([t for t, _, _ in ours]):.2f} | "
                    f"{med([t for t, _, _ in theirs]):.2f} | {med(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | "
                    f"{med([f for _, f, _ in ours]):.2f} / {med([f for _, f, _ in theirs]):.2f} | "
                    f"{max(g for _, _, g in ours):.2f} / {max(g for _, _, g in theirs):.2f} |")
    return "\n".join([
        "## Uploads over SSH (`scripts/bench_upload.py`)",
        "",
        f"edgekit's `SSHTransport.put` (acknowledged every ~1 s of data) against paramiko's `SFTPClient.put` "
        f"(pipelined, confirm=True) on the same connection to a jetson-like sshd, {reps} pairs (A B, then B A); "
        f"ratio: median of per-pair ratios (range). \"At 100 %\": seconds the progress callback had reported "
        f"the whole file before the upload returned (bytes still in buffers). While it ran, {load.describe()}.",
        "",
        "| link | MB | edgekit s | paramiko s | ratio (range) | at 100 % s (edgekit / paramiko) | longest gap s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Command: `{command}` · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    command = command_line()
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd"):
        print("error: needs root and openssh-server (the test devices are real sshd processes)", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="edgekit-bench-upload-"))
    home, project = scratch / "home", scratch / "project"
    home.mkdir()
    (project / "targets").mkdir(parents=True)
    os.environ.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    os.chdir(project)
    results: dict[str, tuple[int, dict]] = {}
    try:
        with OtherLoad() as load:
            for name, rate, size in LINKS:
                results[name] = (size, measure(name, rate, size, args.reps, home, project, scratch))
    finally:
        os.chdir(ROOT)
        shutil.rmtree(scratch, ignore_errors=True)
    section = table(results, args.reps, load, command)
    write_section("upload", section, Path(args.output))
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
