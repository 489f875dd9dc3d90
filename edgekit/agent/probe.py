"""Device facts: what the hardware is, what it may use, which runtimes it has.

Files are read under a configurable root (default "/") so tests can point the probe at trees
built from real board captures.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

from . import emulation, power

ISA_FLAGS = {
    "x86": ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
            "amx_tile", "amx_int8", "amx_bf16"),
    "arm": ("fp", "asimd", "asimdhp", "fphp", "asimddp", "i8mm", "bf16", "sve", "sve2"),
}


def _read(root: str, path: str) -> Optional[str]:
    try:
        with open(os.path.join(root, path.lstrip("/")), "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return None


# (implementer, part) -> core, from the Linux kernel's arch/arm64/include/asm/cputype.h. ARM
# /proc/cpuinfo names no core; the part number does.
ARM_CORES = {(0x41, 0xd03): "Cortex-A53", (0x41, 0xd04): "Cortex-A35", (0x41, 0xd05): "Cortex-A55",
             (0x41, 0xd07): "Cortex-A57", (0x41, 0xd08): "Cortex-A72", (0x41, 0xd09): "Cortex-A73",
             (0x41, 0xd0a): "Cortex-A75", (0x41, 0xd0b): "Cortex-A76", (0x41, 0xd0d): "Cortex-A77",
             (0x41, 0xd41): "Cortex-A78", (0x41, 0xd42): "Cortex-A78AE", (0x41, 0xd44): "Cortex-X1",
             (0x41, 0xd46): "Cortex-A510", (0x41, 0xd47): "Cortex-A710", (0x41, 0xd4b): "Cortex-A78C",
             (0x4e, 0x004): "Carmel"}


def _int(text: str) -> Optional[int]:
    try:
        return int(text.strip(), 0)
    except ValueError:
        return None


def cpu_facts(root: str) -> dict:
    text = _read(root, "/proc/cpuinfo") or ""
    fields: Dict[str, str] = {}
    flags: List[str] = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags = flags or value.split()
        elif key and key not in fields:
            fields[key] = value.strip()
    family = "arm" if "asimd" in flags or "fp" in flags and "sse" not in flags else "x86"
    isa = [f for f in ISA_FLAGS[family] if f in flags]
    doc = {"model": fields.get("model name") or fields.get("cpu model"), "isa": isa, "isa_family": family}
    if family == "arm":
        implementer, part = _int(fields.get("cpu implementer", "")), _int(fields.get("cpu part", ""))
        core = ARM_CORES.get((implementer, part)) if implementer is not None and part is not None else None
        doc["model"] = doc["model"] or core or fields.get("hardware")
        doc.update(core=core, hardware=fields.get("hardware"), board_model=fields.get("model"))
        doc["missing"] = [f for f in ("asimddp", "i8mm") if f not in flags]
    return doc


def _cgroup_paths(root: str) -> Dict[str, str]:
    """controller -> path of this process's cgroup ('' key for cgroup v2)."""
    out = {}
    for line in (_read(root, "/proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for ctrl in parts[1].split(",") if parts[1] else [""]:
                out[ctrl] = parts[2]
    return out


def _cgroup_file(root: str, controller: str, name: str) -> Optional[str]:
    """A cgroup file for this process, v2 unified or v1 per-controller, walking up to the root."""
    paths = _cgroup_paths(root)
    candidates = []
    if controller in paths:
        mounts = {"cpu": ("cpu,cpuacct", "cpu"), "memory": ("memory",)}[controller]
        for mount in mounts:
            candidates.append(("/sys/fs/cgroup/" + mount, paths[controller]))
    if "" in paths:
        candidates.append(("/sys/fs/cgroup", paths[""]))
    for base, rel in candidates:
        rel = rel.rstrip("/")
        while True:
            value = _read(root, base + rel + "/" + name)
            if value is not None:
                return value.strip()
            if not rel:
                break
            rel = rel.rsplit("/", 1)[0]
    return None


def cores(root: str) -> dict:
    online = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = online
    quota = None
    v2 = _cgroup_file(root, "cpu", "cpu.max")
    if v2 and not v2.startswith("max"):
        q, p = v2.split()[:2]
        quota = int(q) / int(p)
    else:
        q1 = _cgroup_file(root, "cpu", "cpu.cfs_quota_us")
        p1 = _cgroup_file(root, "cpu", "cpu.cfs_period_us")
        if q1 and p1 and int(q1) > 0:
            quota = int(q1) / int(p1)
    effective = usable if quota is None else max(1, min(usable, int(quota)))
    return {"online": online, "affinity": usable, "cgroup_quota": quota, "usable": effective}


def memory(root: str) -> dict:
    info = {}
    for line in (_read(root, "/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            info[key] = int(rest.split()[0]) * 1024
    limit = None
    for name in ("memory.max", "memory.limit_in_bytes"):
        value = _cgroup_file(root, "memory", name)
        if value and value.isdigit() and int(value) < (1 << 60):
            limit = int(value)
            break
    total = info.get("MemTotal")
    usable = min(x for x in (total, limit) if x) if (total or limit) else None
    doc = {"total_bytes": total, "available_bytes": info.get("MemAvailable"),
           "cgroup_limit_bytes": limit, "usable_bytes": usable}
    if "NvMapMemUsed" in info:  # Jetson: GPU allocations in the shared DRAM
        doc["nvmap_used_bytes"] = info["NvMapMemUsed"]
    return doc


# L4T release -> JetPack, from NVIDIA's JetPack archive; a release not listed gets only its major.
JETPACK = {"32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4",
           "32.7.5": "4.6.5", "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2",
           "35.5.0": "5.1.3", "35.6.0": "5.1.4", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2"}
JETPACK_MAJOR = {"32": "4", "34": "5", "35": "5", "36": "6", "38": "7"}


def l4t(text: str) -> Optional[dict]:
    """`# R35 (release), REVISION: 4.1, ...` -> {"l4t": "35.4.1", "jetpack": "5.1.2", ...}."""
    m = re.search(r"R(\d+) \(release\), REVISION: (\d+)\.(\d+)", text)
    if not m:
        return None
    release = "{}.{}.{}".format(*m.groups())
    return {"l4t": release, "jetpack": JETPACK.get(release),
            "jetpack_major": JETPACK_MAJOR.get(m.group(1))}


def nvpmodel() -> Optional[dict]:
    """`nvpmodel -q` -> {"mode": "15W", "id": 0} on Jetsons that have it."""
    exe = shutil.which("nvpmodel")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}
    text = out.stdout.decode("utf-8", "replace")
    m = re.search(r"NV Power Mode:\s*(.+)", text)
    ids = [line.strip() for line in text.splitlines() if line.strip().isdigit()]
    if not m:
        return {"error": " ".join((text + out.stderr.decode("utf-8", "replace")).split())[:200]}
    return {"mode": m.group(1).strip(), "id": int(ids[0]) if ids else None}


def board(root: str, cpu: Optional[dict] = None) -> dict:
    model = _read(root, "/proc/device-tree/model")
    tegra = _read(root, "/etc/nv_tegra_release")
    model = model.strip("\x00\n ") if model else (cpu or {}).get("board_model")  # Pi kernels print it in cpuinfo too
    doc = {"model": model or None,
           "nv_tegra_release": tegra.splitlines()[0].strip() if tegra else None}
    if tegra:
        doc.update(l4t(tegra) or {})
        doc["nvpmodel"] = nvpmodel()
    return doc


def os_facts(root: str) -> dict:
    pretty = None
    for line in (_read(root, "/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            pretty = line.split("=", 1)[1].strip().strip('"')
    return {"name": pretty, "system": platform.system(), "kernel": platform.release()}


def _version(dist: str) -> Optional[str]:
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def runtimes() -> Dict[str, dict]:
    """Installed runtimes, keyed by the runner table's names (what --runtime takes): every runner
    says for itself whether its runtime is there and whether it imports. Only cheap imports happen."""
    from .runners import RUNNERS

    found = {}
    for name, runner in RUNNERS.items():
        try:
            entry = runner.probe()
        except Exception as exc:  # a probe must never cost the whole document
            entry = {"error": " ".join(str(exc).split())[:200]}
        if entry is not None:
            found[name] = entry
    return found


def governor(root: str) -> Optional[str]:
    value = _read(root, "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return value.strip() if value else None


def probe(root: str = "/") -> dict:
    import socket

    warnings = []
    cpu = cpu_facts(root)
    gov = governor(root)
    if gov and gov != "performance":
        warnings.append("CPU governor is {!r}, not 'performance': clocks may scale during a benchmark".format(gov))
    emulated = emulation.detect()
    if emulated.get("emulated"):
        warnings.append("running under emulation ({}): timings are not latency figures".format(emulated["program"]))
    numpy_version = _version("numpy")
    if numpy_version is None:
        warnings.append("numpy is not installed: the agent cannot run models (pip install numpy)")
    return {
        "command": "probe",
        "hostname": socket.gethostname(),
        "arch": platform.machine(),
        "cpu": cpu,
        "cores": cores(root),
        "memory": memory(root),
        "os": os_facts(root),
        "board": board(root, cpu),
        "emulation": emulated,
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "numpy": numpy_version,
        "runtimes": runtimes(),
        "governor": gov,
        "power_sensor": power.found(root),
        "sensor_root": root,
        "warnings": warnings,
    }
