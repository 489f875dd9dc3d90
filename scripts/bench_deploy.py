#!/usr/bin/env python3
"""Deploy over SSH, measured against real loopback sshd test devices (tests/devices.py; needs root).

- warm re-deploy overhead: connect, lock, probe, (reused) measurements, push check, install,
  on-device smoke test, switch `current` - everything except measuring, which a warm run reuses.
  Compared with the same warm re-deploy on the `local` target in the same run (A B A B).
- agent first push: `ensure_agent` with no agent on the device vs with it there (A B A B).
- fleet: wall time of profiling 1 device vs 4 devices at once, short workload, measured afresh.
- agent session (section `deploy-session`, also alone with --session-only): agent execs per warm
  re-deploy and bytes sent by a no-op re-deploy, counted on the real SSH transport and by a
  delaying proxy, and the warm re-deploy through that proxy (50 ms more per round trip:
  scripts/latency_proxy.py, as netem is absent) in session mode against per-command mode (A B / B A).
- warm paths (section `deploy-warm`, also alone with --warm-only: no root or sshd needed): the
  whole `edgekit deploy --target local --reuse` and a cached `edgekit compress`, each as a fresh
  process, paired A B / B A with `python -c 'import torch, onnxruntime'` (what any edgekit run
  that touches a model framework pays anyway); the ratio is the median of the per-pair ratios.

Writes its sections of BENCHMARKS.md. Usage: .venv/bin/python scripts/bench_deploy.py [--reps N] [--warm-only]
[--session-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import OtherLoad, command_line, host_description, write_section  # noqa: E402

SHORT = """
[build]
recipes = ["onnx:fp32", "onnx:int8-static"]
[bench]
warmup_s = 0.05
min_runs = 20
min_s = 0.1
max_s = 5.0
[select]
objective = "p90_ms"
"""


def median(xs: list[float]) -> float:
    return statistics.median(xs)


BASELINE = [sys.executable, "-c", "import torch, onnxruntime"]
WARM_GOALS = {"deploy": 1.5, "compress": 1.3}


def _timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    """Wall seconds of one fresh process running `cmd` (this worktree's edgekit), and its stdout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[1:])} exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
    return elapsed, proc.stdout


def warm_paths(project: Path, reps: int) -> dict[str, list[tuple[float, float]]]:
    """(command wall, baseline wall) pairs for a warm re-deploy and a cached compress.

    Before timing: one cold deploy (trains the example if needed, builds, measures), then one run
    of each command, so every artifact, reference output and the weights file's digest is cached;
    each timed run is checked to have built and measured nothing.
    """
    import json

    edgekit = [sys.executable, "-m", "edgekit"]
    deploy = edgekit + ["deploy", "--target", "local", "--profile", "short", "--reuse", "--json"]
    compress = edgekit + ["compress", "--profile", "short", "--json"]
    _timed(edgekit + ["deploy", "--target", "local", "--profile", "short", "--json"], project)
    _timed(compress, project)
    _timed(deploy, project)

    def check(name: str, stdout: str) -> None:
        rows = json.loads(stdout)["variants"]
        if name == "deploy":
            assert all(r["cached"] and r["measurement_reused"] for r in rows), "a warm re-deploy built or measured"
        else:
            assert all(r["cached"] for r in rows), "a cached compress built something"

    pairs: dict[str, list[tuple[float, float]]] = {"deploy": [], "compress": []}
    for i in range(reps):
        for name, cmd in (("deploy", deploy), ("compress", compress)):
            if i % 2 == 0:  # A B, then B A: drift during a pair cancels over the run
                (a, out), (b, _) = _timed(cmd, project), _timed(BASELINE, project)
            else:
                (b, _), (a, out) = _timed(BASELINE, project), _timed(cmd, project)
            check(name, out)
            pairs[name].append((a, b))
        print(f"warm pair {i + 1}/{reps}: " + ", ".join(f"{k} {v[-1][0]:.2f}s / {v[-1][1]:.2f}s"
                                                        for k, v in pairs.items()), flush=True)
    return pairs


def warm_table(pairs: dict[str, list[tuple[float, float]]], reps: int, load: OtherLoad, command: str) -> str:
    what = {
        "deploy": "warm re-deploy on `local`: `edgekit deploy --target local --reuse` (probe, reused "
                  "measurements, install, smoke test on the device, switch)",
        "compress": "cached `edgekit compress` (every artifact and reference output cached)",
    }
    rows = []
    for name, got in pairs.items():
        ratio = median([a / b for a, b in got])
        goal = WARM_GOALS[name]
        rows.append(f"| {what[name]} | {median([a for a, _ in got]):.2f} | {median([b for _, b in got]):.2f} | "
                    f"{ratio:.2f} ({min(a / b for a, b in got):.2f}-{max(a / b for a, b in got):.2f}) | "
                    f"≤ {goal} ({'met' if ratio <= goal else 'not met'}) |")
    return "\n".join([
        "## Warm paths (`scripts/bench_deploy.py`)",
        "",
        f"The bundled digits CNN, ONNX fp32 + int8 (short profile), everything cached; each command a fresh "
        f"process, paired with `python -c 'import torch, onnxruntime'` in the same run ({reps} pairs, A B then "
        f"B A). Ratio: median of the per-pair ratios (range). Host: {host_description(runtimes=('onnxruntime',))}; "
        f"while it ran, {load.describe()} (shared machine: compare ratios, not absolute seconds).",
        "",
        "| what | median s | baseline median s | ratio (range) | goal |",
        "|---|---:|---:|---:|---|",
        *rows,
        "",
        "Neither command imports torch once the example's weights file has been seen (its digest is recorded "
        "by file hash), nor scikit-learn (the example's data is cached as .npz); the re-deploy imports "
        "onnxruntime for the host side of the smoke test.",
        "",
        f"Command: `{command}` · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ])


class Counting:
    """The real transport with its execs (`run`, `spawn`) counted."""

    def __init__(self, inner) -> None:
        self.inner, self.execs = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, argv, timeout):
        self.execs += 1
        return self.inner.run(argv, timeout)

    def spawn(self, argv):
        self.execs += 1
        return self.inner.spawn(argv)


def session_section(home: Path, project: Path, scratch: Path, reps: int, rtt_s: float, command: str) -> str:
    """Session mode against per-command mode on one jetson-like sshd: execs and bytes of a warm
    re-deploy, then its wall time behind a delaying proxy."""
    from devices import PERSONAS, TestDevice, device_base
    from latency_proxy import DelayingProxy

    from edgekit import pipeline
    from edgekit.device import connect, holder_name
    from edgekit.examples import digits
    from edgekit.config import load_profile, load_target

    device = TestDevice(PERSONAS["jetson-like"], device_base("bench-session"))
    load = OtherLoad().start()
    try:
        device.start()
        device.register(home, project, name="direct")
        with DelayingProxy((device.address, device.port), rtt_s, max_life_s=1800) as proxy:
            key_type, key = device.host_public.split()[:2]
            with open(home / ".ssh" / "config", "a") as fh:
                fh.write(f"Host slow\n  HostName 127.0.0.1\n  Port {proxy.port}\n  User {device.persona.user}\n"
                         f"  IdentityFile {device.client_key}\n  IdentitiesOnly yes\n")
            with open(home / ".ssh" / "known_hosts", "a") as fh:
                fh.write(f"[127.0.0.1]:{proxy.port} {key_type} {key}\n")
            (project / "targets" / "slow.toml").write_text(
                device.target_toml(alias="slow").replace("connect_timeout = 5", "connect_timeout = 30"))
            ctx = pipeline.prepare(digits.spec())
            workspace = pipeline.Workspace(scratch / "host-session", scratch / "host-session" / "results.db")
            prof = load_profile("short")

            def deploy(name: str, session: bool, reuse: bool = True) -> tuple[float, int]:
                target = load_target(name)
                start = time.perf_counter()
                with connect(target) as dev:
                    dev.session_mode = session
                    dev.transport = counted = Counting(dev.transport)
                    with dev.locked(holder_name("bench"), 0):
                        result = pipeline.deploy(ctx, target, prof, dev, workspace, reuse=reuse)
                elapsed = time.perf_counter() - start
                assert result.smoke["passed"]
                assert not reuse or all(r["measurement_reused"] for r in result.to_dict()["variants"])
                return elapsed, counted.execs

            deploy("direct", True, reuse=False)  # cold: agent, artifacts, measurements, inputs
            execs = {mode: deploy("direct", mode)[1] for mode in (True, False)}
            deploy("slow", True, reuse=False)  # measured once under this target's own name, then reused
            sent: dict[bool, int] = {}
            for mode in (True, False):
                deploy("slow", mode)  # the same no-op re-deploy once, then counted
                proxy.reset_counts()
                deploy("slow", mode)
                sent[mode] = proxy.sent
            walls: dict[bool, list[float]] = {True: [], False: []}
            for i in range(reps):
                for mode in ((True, False) if i % 2 == 0 else (False, True)):
                    walls[mode].append(deploy("slow", mode)[0])
                print(f"session pair {i + 1}/{reps}: session {walls[True][-1]:.2f}s, "
                      f"per-command {walls[False][-1]:.2f}s", flush=True)
    finally:
        load.stop()
        device.stop()
        shutil.rmtree(device.base, ignore_errors=True)
    ratio = median([a / b for a, b in zip(walls[True], walls[False])])
    return "\n".join([
        "## Agent session (`scripts/bench_deploy.py`)",
        "",
        f"A jetson-like OpenSSH test device on loopback (tests/devices.py), digits CNN, ONNX fp32 + int8 (short "
        f"profile); a warm re-deploy is `deploy --reuse` after an identical one (probe, reused measurements, "
        f"install, smoke test on the device, switch). Session mode (the default: one agent process per run) "
        f"against per-command mode (`EDGEKIT_AGENT_SESSION=0`: one agent process per command). Execs are "
        f"counted on the real SSH transport; bytes host → device by the proxy (SSH handshake included). "
        f"{reps} pairs A B / B A; ratio: median of per-pair ratios. Host: "
        f"{host_description(runtimes=('onnxruntime',))}; while it ran, {load.describe()}.",
        "",
        "| what | session | per-command | goal |",
        "|---|---:|---:|---|",
        f"| agent execs per warm re-deploy | {execs[True]} | {execs[False]} | 1 "
        f"({'met' if execs[True] <= 1 else 'not met'}) |",
        f"| bytes sent by a no-op re-deploy | {sent[True] / 1000:.1f} kB | {sent[False] / 1000:.1f} kB | < 100 kB "
        f"({'met' if sent[True] < 100_000 else 'not met'}) |",
        f"| warm re-deploy, +{rtt_s * 1000:.0f} ms per round trip (delaying proxy), median s | "
        f"{median(walls[True]):.2f} | {median(walls[False]):.2f} | session faster: ratio {ratio:.2f} "
        f"({min(a / b for a, b in zip(walls[True], walls[False])):.2f}-"
        f"{max(a / b for a, b in zip(walls[True], walls[False])):.2f}) |",
        "",
        "Every remaining round trip in session mode is one request to the session or one sftp operation "
        "(the artifact and input existence checks, the outputs download).",
        "",
        f"Command: `{command}` · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--warm-only", action="store_true", help="only the warm-path section (no root or sshd)")
    parser.add_argument("--session-only", action="store_true", help="only the agent-session section")
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="added round-trip time for the session section")
    args = parser.parse_args()
    command = command_line()  # before the chdir below
    if not args.warm_only and (os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd")):
        print("error: needs root and openssh-server (the test devices are real sshd processes)", file=sys.stderr)
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="edgekit-bench-deploy-"))
    home, project = scratch / "home", scratch / "project"
    (project / "profiles").mkdir(parents=True)
    home.mkdir()
    (project / "profiles" / "short.toml").write_text(SHORT)
    os.environ.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                      EDGEKIT_CACHE=os.environ.get("EDGEKIT_CACHE", str(scratch / "model-cache")))
    os.chdir(project)
    (project / "targets").mkdir()
    (project / "targets" / "local.toml").write_text('transport = "local"\nworkdir = "~/.edgekit-local"\n')

    if args.session_only:
        try:
            section = session_section(home, project, scratch, args.reps, args.rtt_ms / 1000, command)
        finally:
            os.chdir(ROOT)
            shutil.rmtree(scratch, ignore_errors=True)
        write_section("deploy-session", section, Path(args.output))
        print(section)
        return 0
    try:
        with OtherLoad() as warm_load:
            pairs = warm_paths(project, args.reps)
    finally:
        if args.warm_only:
            os.chdir(ROOT)
            shutil.rmtree(scratch, ignore_errors=True)
    warm = warm_table(pairs, args.reps, warm_load, command)
    write_section("deploy-warm", warm, Path(args.output))
    print(warm)
    if args.warm_only:
        return 0

    from devices import PERSONAS, TestDevice, device_base
    from edgekit import pipeline
    from edgekit.device import connect, holder_name
    from edgekit.examples import digits
    from edgekit.config import load_profile, load_target

    devices: list[TestDevice] = []
    load = OtherLoad().start()  # stopped while the devices live: their sshd trees count as ours
    try:
        names = []
        for i, persona in enumerate(["jetson-like", "phone-like", "jetson-like", "phone-like"]):
            device = TestDevice(PERSONAS[persona], device_base(f"bench{i}"))
            device.start()
            devices.append(device)
            names.append(device.register(home, project, name=f"dev{i}"))
        print(f"devices: {', '.join(names)}", flush=True)

        ctx = pipeline.prepare(digits.spec())
        workspace = pipeline.Workspace(scratch / "host", scratch / "host" / "results.db")
        prof = load_profile("short")
        pipeline.compress(ctx, prof.recipes, workspace)  # warm the artifact cache: deploys time the device work

        def deploy(name: str) -> float:
            target = load_target(name)
            start = time.perf_counter()
            with connect(target) as device, device.locked(holder_name("bench"), 0):
                result = pipeline.deploy(ctx, target, prof, device, workspace, reuse=True)
            elapsed = time.perf_counter() - start
            assert result.smoke["passed"]
            return elapsed

        # Cold deploys first (measuring happens here, not timed), then warm re-deploys interleaved.
        deploy("dev0")
        deploy("local")
        warm_ssh, warm_local = [], []
        for _ in range(args.reps):
            warm_ssh.append(deploy("dev0"))
            warm_local.append(deploy("local"))
        print(f"warm re-deploy: ssh {median(warm_ssh):.2f}s local {median(warm_local):.2f}s", flush=True)

        # Agent push: remove it from the device between runs.
        push_cold, push_warm = [], []
        target = load_target("dev1")
        agent_dir = devices[1].device_path(".edgekit/agent")
        for _ in range(args.reps):
            shutil.rmtree(agent_dir, ignore_errors=True)
            for bucket in (push_cold, push_warm):
                with connect(target) as device:
                    start = time.perf_counter()
                    device.ensure_agent()
                    bucket.append(time.perf_counter() - start)
        print(f"agent: first push {median(push_cold):.2f}s, present {median(push_warm):.2f}s", flush=True)

        # Fleet: 1 vs 4 devices, measuring every time (the default).
        fleet_targets = [load_target(n) for n in names]
        one, four = [], []
        for _ in range(max(2, args.reps // 2)):
            for bucket, chosen in ((one, fleet_targets[:1]), (four, fleet_targets)):
                start = time.perf_counter()
                outcome = pipeline.profile_fleet(ctx, chosen, prof, workspace)
                bucket.append(time.perf_counter() - start)
                failed = [n for n, r in outcome.items() if isinstance(r, Exception)]
                assert not failed, {n: str(outcome[n]) for n in failed}
        print(f"fleet: 1 device {median(one):.2f}s, 4 devices {median(four):.2f}s", flush=True)
        load.stop()
    finally:
        for device in devices:
            device.stop()
            shutil.rmtree(device.base, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)

    table = "\n".join([
        "## Deploy over SSH (`scripts/bench_deploy.py`)",
        "",
        f"Real OpenSSH test devices on loopback (tests/devices.py), digits CNN, ONNX fp32 + int8; "
        f"{args.reps} interleaved repetitions, medians. Host: {host_description(runtimes=('onnxruntime',))}; "
        f"while it ran, {load.describe()} (shared machine: compare ratios, not absolute seconds).",
        "",
        "| what | median s | baseline (same run) | ratio |",
        "|---|---:|---|---:|",
        f"| warm re-deploy over SSH (connect → lock → probe → --reuse measurements → install → smoke test → switch) "
        f"| {median(warm_ssh):.2f} | same on `local`: {median(warm_local):.2f} s | {median(warm_ssh) / median(warm_local):.2f} |",
        f"| agent first push (put + verify + `version`) | {median(push_cold):.2f} | agent already there: "
        f"{median(push_warm):.2f} s | {median(push_cold) / median(push_warm):.2f} |",
        f"| profile 4 devices at once (short workload, measured afresh) | {median(four):.2f} | 1 device: {median(one):.2f} s "
        f"| {median(four) / median(one):.2f} |",
        "",
        f"Goal for the warm re-deploy: ≤ 2 s of overhead. Measured: {median(warm_ssh):.2f} s "
        f"({'met' if median(warm_ssh) <= 2 else 'not met on this loaded machine'}). Host-side model loading "
        f"(`prepare`) is excluded: it is the same for every target.",
        "",
        f"Command: `.venv/bin/python scripts/bench_deploy.py --reps {args.reps}` · "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ])
    write_section("deploy", table, Path(args.output))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
