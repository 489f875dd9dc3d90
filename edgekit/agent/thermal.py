"""Thermal state and clocks before and after a benchmark: what makes the same model's numbers move.

Thermal zones and CPU frequencies come from sysfs under the configurable root; the Raspberry Pi's
firmware throttling flags from `vcgencmd get_throttled` when that command exists.
"""

from __future__ import annotations

import glob
import os
import re
import time
from typing import Dict, List, Optional

from .power import Unavailable, read_opt, run_command, under

# get_throttled bits (raspberrypi/documentation, graphics-utilities.adoc): 0-3 now, 16-19 since boot.
THROTTLE_BITS = ("undervoltage", "arm_frequency_capped", "throttled", "soft_temperature_limit")


def temperatures(root: str) -> Dict[str, float]:
    """{zone type: degrees C} from /sys/class/thermal/thermal_zone*/ (temp is in millidegrees)."""
    out: Dict[str, float] = {}
    zones = glob.glob(under(root, "sys/class/thermal/thermal_zone*"))
    for d in sorted(zones, key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0)):
        temp = read_opt(os.path.join(d, "temp"))
        if temp is None or not temp.lstrip("-").isdigit():
            continue  # disabled zones answer EINVAL / ENODATA
        name = read_opt(os.path.join(d, "type")) or os.path.basename(d)
        if name in out:
            name = "{}#{}".format(name, os.path.basename(d)[len("thermal_zone"):])
        out[name] = int(temp) / 1000.0
    return out


def cpu_mhz(root: str) -> Dict[str, float]:
    """{cpuN: current MHz} from cpufreq (kHz); offline cores have no readable file and are left out."""
    out: Dict[str, float] = {}
    paths = glob.glob(under(root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"))
    for path in sorted(paths, key=lambda p: int(re.search(r"cpu(\d+)/cpufreq", p).group(1))):
        value = read_opt(path)
        if value and value.isdigit():
            out[re.search(r"(cpu\d+)/cpufreq", path).group(1)] = int(value) / 1000.0
    return out


def governors(root: str) -> List[str]:
    found = set()
    for path in glob.glob(under(root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")):
        value = read_opt(path)
        if value:
            found.add(value)
    return sorted(found)


def decode_throttled(text: str) -> dict:
    """`throttled=0x50005` -> raw value and flag names, current bits apart from since-boot bits."""
    m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    if not m:
        raise ValueError("not a get_throttled answer: {!r}".format(text.strip()[:80]))
    value = int(m.group(1), 0)
    return {"raw": hex(value),
            "now": [name for bit, name in enumerate(THROTTLE_BITS) if value & (1 << bit)],
            "since_boot": [name for bit, name in enumerate(THROTTLE_BITS) if value & (1 << (16 + bit))]}


def pi_throttled() -> Optional[dict]:
    try:
        return decode_throttled(run_command(["vcgencmd", "get_throttled"]))
    except (Unavailable, ValueError):
        return None


def snapshot(root: str) -> dict:
    doc = {"time": time.time(), "temps_c": temperatures(root), "cpu_mhz": cpu_mhz(root)}
    throttled = pi_throttled()
    if throttled is not None:
        doc["throttled"] = throttled
    return doc


def hottest(root: str) -> Optional[float]:
    temps = temperatures(root)
    return max(temps.values()) if temps else None


def cooldown(root: str, target_c: float, max_s: float, poll_s: float = 1.0) -> dict:
    """Wait (bounded by max_s) until the hottest zone is at or below target_c."""
    start = time.perf_counter()
    first = current = hottest(root)
    if first is None:
        return {"target_c": target_c, "reached": False, "waited_s": 0.0, "start_c": None, "end_c": None,
                "reason": "no readable thermal zone"}
    while current is not None and current > target_c and time.perf_counter() - start < max_s:
        time.sleep(min(poll_s, max(0.0, max_s - (time.perf_counter() - start))))
        current = hottest(root)
    return {"target_c": target_c, "reached": current is not None and current <= target_c,
            "waited_s": time.perf_counter() - start, "start_c": first, "end_c": current}


def warnings(before: dict, after: dict, govs: List[str]) -> List[str]:
    """What in the thermal record should make a reader doubt the latency numbers."""
    out = []
    slow = [g for g in govs if g != "performance"]
    if slow:
        out.append("CPU governor is {}, not 'performance': clocks may scale during the benchmark"
                   .format("/".join(repr(g) for g in slow)))
    flags = (after.get("throttled") or {}).get("now") or []
    if flags:
        out.append("the board reports {} now (vcgencmd get_throttled {})"
                   .format(", ".join(flags), after["throttled"]["raw"]))
    new = set((after.get("throttled") or {}).get("since_boot") or []) - set(
        (before.get("throttled") or {}).get("since_boot") or [])
    if new:
        out.append("the board started reporting {} during the benchmark".format(", ".join(sorted(new))))
    b, a = before.get("cpu_mhz") or {}, after.get("cpu_mhz") or {}
    common = [c for c in b if c in a]
    if common and max(a[c] for c in common) < 0.9 * max(b[c] for c in common):
        out.append("the fastest CPU clock fell from {:.0f} to {:.0f} MHz during the benchmark"
                   .format(max(b[c] for c in common), max(a[c] for c in common)))
    return out
