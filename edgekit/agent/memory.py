"""Process memory from /proc/self/status (VmHWM is the kernel's own peak RSS)."""

from __future__ import annotations

from typing import Dict, Optional


def read_status(path: str = "/proc/self/status") -> Dict[str, float]:
    """VmHWM, VmRSS, ... in MiB. Empty when /proc is absent (macOS, some sandboxes)."""
    out = {}
    try:
        with open(path) as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key.startswith("Vm") and rest.strip().endswith("kB"):
                    out[key] = int(rest.split()[0]) / 1024.0
    except OSError:
        pass
    return out


def peak_rss_mb() -> Optional[float]:
    status = read_status()
    if "VmHWM" in status:
        return status["VmHWM"]
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except (ImportError, OSError):
        return None


def nvmap_used_mb(root: str = "/") -> Optional[float]:
    """Jetson's NvMapMemUsed (GPU buffers in the unified DRAM, system-wide); None elsewhere."""
    import os

    try:
        with open(os.path.join(root, "proc/meminfo")) as fh:
            for line in fh:
                if line.startswith("NvMapMemUsed:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None
