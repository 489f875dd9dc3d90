"""How much of the CPU other processes took while the agent was measuring.

A figure timed while something else competes for the cores is inflated, and nothing in the
samples alone says so. The kernel's counters do: /proc/stat holds the busy time of every CPU and
/proc/self/stat this process's own (and its waited-for children's), both in clock ticks
(proc(5)). Over the window, (busy on the CPUs this process may run on - own) / (elapsed x those
CPUs) is the share others used. Only the CPUs in the affinity mask count: a busy core the agent
can never be scheduled on does not slow it down.
"""

from __future__ import annotations

import os
import time
from typing import List, Optional

WARN_ABOVE = 0.25  # above this share the figures may be inflated

# /proc/stat columns after the cpu name: user nice system idle iowait irq softirq steal guest guest_nice.
# guest time is already inside user (proc(5)); idle and iowait are not busy.
_BUSY = (0, 1, 2, 5, 6, 7)


def _cpus() -> List[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: every CPU
        return list(range(os.cpu_count() or 1))


def _busy_ticks(proc: str, cpus: List[int]) -> int:
    wanted = {"cpu{}".format(c) for c in cpus}
    total = 0
    found = 0
    with open(os.path.join(proc, "stat")) as fh:
        for line in fh:
            parts = line.split()
            if parts and parts[0] in wanted:
                values = [int(x) for x in parts[1:]]
                total += sum(values[i] for i in _BUSY if i < len(values))
                found += 1
    if found != len(wanted):
        raise ValueError("{} of {} CPUs listed in {}/stat".format(found, len(wanted), proc))
    return total


def _own_ticks(proc: str) -> int:
    with open(os.path.join(proc, "self", "stat")) as fh:
        text = fh.read()
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    # utime stime cutime cstime are fields 14-17 of proc(5); after the name they start at index 11
    return sum(int(x) for x in fields[11:15])


def start(proc: str = "/proc") -> dict:
    """The counters at the start of the window (or why they cannot be read)."""
    cpus = _cpus()
    try:
        return {"cpus": cpus, "busy": _busy_ticks(proc, cpus), "own": _own_ticks(proc), "t": time.monotonic()}
    except (OSError, ValueError, IndexError) as exc:
        return {"cpus": cpus, "reason": "{} not readable: {}".format(proc, exc)}


def finish(begin: dict, proc: str = "/proc") -> dict:
    """The bench document's `load` section: {"other_cpu": 0..1 or None, "cores": n[, "reason"]}."""
    cores = len(begin["cpus"])
    if "reason" in begin:
        return {"other_cpu": None, "cores": cores, "reason": begin["reason"]}
    try:
        busy, own = _busy_ticks(proc, begin["cpus"]), _own_ticks(proc)
    except (OSError, ValueError, IndexError) as exc:
        return {"other_cpu": None, "cores": cores, "reason": "{} not readable: {}".format(proc, exc)}
    elapsed = time.monotonic() - begin["t"]
    try:
        hz = os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        hz = 100
    capacity = elapsed * hz * cores
    if capacity <= 0:
        return {"other_cpu": None, "cores": cores, "reason": "the window was too short to measure"}
    other = ((busy - begin["busy"]) - (own - begin["own"])) / capacity
    return {"other_cpu": min(1.0, max(0.0, other)), "cores": cores}


def warning(load: dict) -> Optional[str]:
    other = load.get("other_cpu")
    if other is None or other <= WARN_ABOVE:
        return None
    return ("other processes used {:.0f} % of the CPU while measuring: figures may be inflated"
            .format(other * 100))
