"""What every benchmark script shares: its own section of BENCHMARKS.md, a description of the host
taken from edgekit's device probe, and how much CPU other processes took while it timed.

The machines these scripts run on are shared and noisy, so a figure is only worth its context: the
host is described by the same probe the agent sends from a device (never typed in, so a host with
AVX-512 VNNI says so), and the load is measured, not guessed.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------- BENCHMARKS.md sections

def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"section name {name!r}: use lowercase letters, digits, '-' or '_'")
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def read_section(name: str, path: Path = BENCHMARKS) -> Optional[str]:
    """The text between this section's markers, or None when the file or the section is absent."""
    begin, end = _markers(name)
    text = path.read_text() if path.is_file() else ""
    m = re.search(re.escape(begin) + r"\n?(.*?)\n?" + re.escape(end), text, flags=re.S)
    return m.group(1) if m else None


def section_rows(name: str, path: Path = BENCHMARKS) -> list[str]:
    """The markdown table body rows of this section only (header and separator rows left out)."""
    body = read_section(name, path) or ""
    lines = [line for line in body.splitlines() if line.startswith("|")]
    rows = []
    for i, line in enumerate(lines):
        if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip()):
            continue
        if i + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            continue  # a header: the row right above a separator
        rows.append(line)
    return rows


def publish(name: str, markdown: str, write: bool = True) -> None:
    """Print a benchmark's section and, unless the run asked not to (`--no-write`), store it."""
    print(markdown)
    if write:
        write_section(name, markdown)


def write_section(name: str, markdown: str, path: Path = BENCHMARKS) -> None:
    """Replace only this benchmark's section (appending it if new), so branches that each re-run
    one benchmark merge cleanly and no script can overwrite another's figures."""
    begin, end = _markers(name)
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, count=1, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


# --------------------------------------------------------------------------- the host, from the probe

def _isa_x86(isa: set[str]) -> str:
    if "avx2" not in isa:
        return "no AVX2 (no AVX-512, no VNNI)"
    parts = ["AVX2"]
    vnni = [label for flag, label in (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI")) if flag in isa]
    if "avx512f" in isa:
        parts.append("AVX-512F")
    if vnni:
        parts += vnni
    if "amx_int8" in isa:
        parts.append("AMX-INT8")
    missing = [label for ok, label in (("avx512f" in isa, "AVX-512"), (bool(vnni), "VNNI")) if not ok]
    text = ", ".join(parts)
    return f"{text} (no {', no '.join(missing)})" if missing else text


def _isa_arm(isa: set[str]) -> str:
    have = [label for flag, label in (("asimd", "NEON"), ("asimddp", "dot product (asimddp)"),
                                      ("i8mm", "int8 matmul (i8mm)")) if flag in isa]
    missing = [flag for flag in ("asimddp", "i8mm") if flag not in isa]
    text = ", ".join(have) or "no NEON"
    return f"{text} (no {', no '.join(missing)})" if missing else text


def _gib(n: Optional[int]) -> Optional[str]:
    return f"{n / 2**30:.0f} GiB" if n else None


def host_description(probe: Optional[dict] = None, runtimes: Optional[tuple[str, ...]] = None) -> str:
    """One line about the machine, e.g. "AMD EPYC 7B13, 2 usable cores, 31 GiB, AVX2 (no AVX-512,
    no VNNI), Python 3.11.7, onnxruntime 1.32.0", from an agent `probe` document (this host's when
    none is given). Names the ISA facts int8 kernels depend on: AVX2 / AVX-512 / VNNI on x86,
    dot product and i8mm on ARM. `runtimes`: the agent runtime names to list (default: every one)."""
    if probe is None:
        from edgekit.agent.probe import probe as run_probe

        probe = run_probe("/")
    cpu = probe.get("cpu") or {}
    isa = set(cpu.get("isa") or ())
    cores = probe.get("cores") or {}
    usable, online = cores.get("usable"), cores.get("online")
    parts = [cpu.get("model") or cpu.get("core") or probe.get("arch") or "unknown CPU"]
    if cpu.get("core") and cpu.get("core") != parts[0]:
        parts[0] += f" ({cpu['core']})"
    if usable:
        parts.append(f"{usable} usable core{'s' if usable != 1 else ''}"
                     + (f" of {online} online" if online and online != usable else ""))
    memory = _gib((probe.get("memory") or {}).get("usable_bytes"))
    if memory:
        parts.append(memory)
    parts.append(_isa_arm(isa) if cpu.get("isa_family") == "arm" else _isa_x86(isa))
    emulation = probe.get("emulation") or {}
    if emulation.get("emulated"):
        parts.append(f"EMULATED ({emulation.get('program')}): timings are not latency figures")
    python = (probe.get("python") or {}).get("version")
    if python:
        parts.append(f"Python {python}")
    found = probe.get("runtimes") or {}
    for name in runtimes if runtimes is not None else tuple(found):
        entry = found.get(name)
        if entry is None:
            parts.append(f"{name} not installed")
        else:
            label = entry.get("package") or name
            parts.append(f"{label} {entry.get('version')}" + (" (broken: {})".format(entry["error"])
                                                               if entry.get("error") else ""))
    return ", ".join(parts)


# --------------------------------------------------------------------------- load of other processes

def _machine_ticks() -> tuple[int, int]:
    """(busy ticks of every CPU but steal, steal ticks) from /proc/stat's first line."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]] + [0] * 10
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    return user + nice + system + irq + softirq, steal  # guest time is already inside user


def _tree_ticks() -> int:
    """CPU ticks of this process and of every live descendant, each with its reaped children's:
    the benchmark's own subprocesses (agents, bare loops, test sshds) are not 'other processes'."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            rest = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        parent[int(entry)] = int(rest[1])
        ticks[int(entry)] = sum(int(x) for x in rest[11:15])  # utime stime cutime cstime
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo += children.get(pid, [])
    return total


class OtherLoad:
    """`with OtherLoad() as load: ...` then `load.cores`: cores' worth of CPU that processes other
    than this one and its descendants used meanwhile (0 = the machine was ours), from /proc/stat.
    `load.steal`: cores' worth the hypervisor gave to other VMs (shared hosts show it)."""

    cores: float = float("nan")
    steal: float = float("nan")
    seconds: float = 0.0

    def start(self) -> OtherLoad:
        self._start = (time.monotonic(), _machine_ticks(), _tree_ticks())
        return self

    def stop(self) -> OtherLoad:
        """Call while the benchmark's subprocesses still live: a live descendant's CPU is counted
        as ours, one killed and reparented to init before this is not."""
        t0, (busy0, steal0), own0 = self._start
        (busy1, steal1), own1 = _machine_ticks(), _tree_ticks()
        self.seconds = max(time.monotonic() - t0, 1e-9)
        hz = os.sysconf("SC_CLK_TCK")
        self.cores = max(0.0, ((busy1 - busy0) - (own1 - own0)) / hz / self.seconds)
        self.steal = max(0.0, (steal1 - steal0) / hz / self.seconds)
        return self

    def __enter__(self) -> OtherLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> str:
        text = f"other processes used {self.cores:.2f} cores on average (measured from /proc/stat)"
        return text + (f", and the hypervisor took {self.steal:.2f} cores' worth (steal)" if self.steal >= 0.01 else "")


def command_line(argv: Optional[list[str]] = None) -> str:
    """The command that ran this script, as one would type it from the repository root."""
    argv = sys.argv if argv is None else argv
    script = Path(argv[0]).resolve()
    try:
        script_text = str(script.relative_to(ROOT))
    except ValueError:
        script_text = str(script)
    return shlex.join([".venv/bin/python", script_text, *argv[1:]])
