#!/usr/bin/env python3
"""Build (once, then reuse) the aarch64 userland behind the `pi-arm` test device.

A Debian bookworm arm64 root (debootstrap's first stage, plus the python3 packages it
downloaded), aarch64 wheels of numpy, onnxruntime and ai-edge-litert installed into its
/usr/local, a Raspberry Pi 4's /proc/cpuinfo and device-tree model copied from a real capture,
and `bin/python3`: a wrapper that runs the root's python under qemu-aarch64-static. No binfmt
registration and no chroot are needed; qemu's `-L` makes the root's files shadow the host's
(how the test devices are built: ARCHITECTURE.md, "Tests").

The build is keyed by everything that goes into it, lives under /var/cache/edgekit-testbed (a
path the device's own user can traverse; override with EDGEKIT_TESTBED), appears atomically
(built beside, then renamed) and is reused by later runs. Prints the wrapper's path.

    .venv/bin/python scripts/build_arm_device.py [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPUINFO = ROOT / "tests" / "fixtures" / "devices" / "rpi4_cpuinfo_aarch64.txt"
SUITE = "bookworm"  # Raspberry Pi OS 12 is bookworm: same glibc and Python 3.11
MIRROR = "http://deb.debian.org/debian"
QEMU = "/usr/bin/qemu-aarch64-static"
# What a Pi 4 owner gets from `pip install` today. ai-edge-litert publishes no aarch64 wheel for
# CPython 3.11 after 1.4.0, so the device runs an older LiteRT than the host: that is the point.
WHEELS = ("numpy==2.4.6", "onnxruntime==1.32.0", "ai-edge-litert==1.4.0")
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
LAYOUT_VERSION = 1  # bump when the steps below change


def cache_root() -> Path:
    return Path(os.environ.get("EDGEKIT_TESTBED", "/var/cache/edgekit-testbed"))


def capture(path: Path) -> str:
    """A fixture file without its commentary lines."""
    return "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("#"))


def build_key() -> str:
    doc = {"layout": LAYOUT_VERSION, "suite": SUITE, "wheels": WHEELS, "cpuinfo": capture(CPUINFO)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def target_dir() -> Path:
    return cache_root() / f"pi-arm-{SUITE}-{build_key()}"


def _run(argv: list[str], what: str, **kw) -> None:
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if out.returncode != 0:
        tail = "\n".join(out.stdout.splitlines()[-15:])
        raise SystemExit(f"error: {what} failed (exit {out.returncode}):\n{tail}")


def ensure_tools() -> None:
    missing = [pkg for exe, pkg in ((QEMU, "qemu-user-static"), ("/usr/sbin/debootstrap", "debootstrap"))
               if not os.path.exists(exe)]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit(f"error: {', '.join(missing)} missing. Fix: apt-get install -y {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    apt = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", *missing]
    if subprocess.run(apt, env=env, capture_output=True).returncode != 0:
        _run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=600"], "apt-get update", env=env)
        _run(apt, "apt-get install " + " ".join(missing), env=env)


def userland(root: Path, debs: Path) -> None:
    """Debian arm64 with python3, unpacked without running any maintainer script (none can run here)."""
    debs.mkdir(parents=True, exist_ok=True)
    _run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", "--include=python3",
          f"--cache-dir={debs}", SUITE, str(root), MIRROR], "debootstrap (arm64)")
    for deb in sorted((root / "var" / "cache" / "apt" / "archives").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"unpacking {deb.name}")
    proc = root / "proc"  # the foreign stage leaves proc -> /proc: replace it with our own files
    if proc.is_symlink():
        proc.unlink()
    proc.mkdir(exist_ok=True)


def board_files(root: Path) -> None:
    """What a Pi 4 shows: its /proc/cpuinfo, and the device-tree model its kernel derives `Model:` from.

    qemu looks for every absolute path under the root first, so these shadow the host's. Without
    an ARM /proc/cpuinfo onnxruntime crashes on import under qemu (its cpuinfo library parses it).
    """
    text = capture(CPUINFO)
    (root / "proc" / "cpuinfo").write_text(text)
    model = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model"))
    (root / "proc" / "device-tree").mkdir(exist_ok=True)
    (root / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\0")


def wheels(root: Path, cache: Path) -> None:
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    common = ["--only-binary=:all:", "--python-version", "311", "--implementation", "cp", *platform_args,
              "--disable-pip-version-check", "-q"]
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "download", "-d", str(cache), *common, *WHEELS], "pip download (aarch64 wheels)")
    site = root / "usr" / "local" / "lib" / "python3.11" / "dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    _run([*pip, "install", "--no-index", "--find-links", str(cache), "--target", str(site), "--no-warn-conflicts",
          *common, *WHEELS], "pip install --target (aarch64 wheels)")


def wrapper(final: Path, staging: Path) -> None:
    """`bin/python3`: the root's python under qemu. `-0` makes sys.executable this wrapper, so a
    child started with sys.executable is emulated too, and sys.prefix stays /usr as on a Pi."""
    rootfs = final / "rootfs"
    script = (f'#!/bin/sh\n# aarch64 Python 3.11 of a Debian {SUITE} root, under user-mode emulation\n'
              f'exec {QEMU} -0 "$0" -L {rootfs} {rootfs}/usr/bin/python3.11 "$@"\n')
    (staging / "bin").mkdir()
    path = staging / "bin" / "python3"
    path.write_text(script)
    path.chmod(0o755)


def smoke(python: Path) -> dict:
    code = ("import json, platform, numpy, onnxruntime; from ai_edge_litert import interpreter; "
            "print(json.dumps({'machine': platform.machine(), 'numpy': numpy.__version__, "
            "'onnxruntime': onnxruntime.__version__}))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"error: the aarch64 python does not start: {out.stderr.strip()[-800:]}")
    doc = json.loads(out.stdout)
    if doc["machine"] != "aarch64":
        raise SystemExit(f"error: expected an aarch64 python, got {doc['machine']}")
    return doc


def build() -> Path:
    final = target_dir()
    if (final / "READY").is_file():
        return final / "bin" / "python3"
    ensure_tools()
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o755)
    staging = cache / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    t0 = time.time()
    try:
        userland(staging / "rootfs", cache / "debs-arm64")
        board_files(staging / "rootfs")
        wheels(staging / "rootfs", cache / "wheels-aarch64")
        wrapper(final, staging)
        staging.chmod(0o755)
        if final.exists():  # a half-made one from an older crash
            shutil.rmtree(final)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    doc = smoke(final / "bin" / "python3")
    doc.update(built_s=round(time.time() - t0, 1), wheels=WHEELS, suite=SUITE)
    (final / "READY").write_text(json.dumps(doc) + "\n")
    print(f"built {final} in {doc['built_s']} s", file=sys.stderr)
    return final / "bin" / "python3"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only say whether the cached build exists (exit 1 if not)")
    args = ap.parse_args()
    if args.check:
        ready = (target_dir() / "READY").is_file()
        print(target_dir() / "bin" / "python3" if ready else f"not built: {target_dir()}")
        return 0 if ready else 1
    print(build())
    return 0


if __name__ == "__main__":
    sys.exit(main())
