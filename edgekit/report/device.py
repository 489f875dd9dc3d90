"""What a device said, as lines and tables: deployment status, a target check, target definitions.

Pure: documents in, rows and lines out; the CLI prints them (through `output.say`, so a device's
strings never reach the terminal as markup or control codes).
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ..records import emulated
from ..settings import Target
from .safe import cell


def status_lines(doc: dict[str, Any], target: str) -> list[str]:
    """`status` / `rollback`: per model, current and previous with the recipe and when installed."""
    lines = [f"note: {doc['note']}"] if doc.get("note") else []
    if not doc["models"]:
        lines.append(f"{target}: nothing deployed under {doc['workdir']}")
    for model, info in doc["models"].items():
        record = info.get("deployment") or {}
        lines.append(f"{target} · {model}: current {info['current'] or '-'} "
                     f"({record.get('meta', {}).get('recipe', '?')}, installed {record.get('installed', '?')}); "
                     f"previous {info['previous'] or '-'}")
        if info.get("path"):
            lines.append(f"  {info['path']}")
    return lines


def gc_lines(doc: dict[str, Any], target: str) -> list[str]:
    """`gc`: each path removed (or that would be) with its size and why, then what stays."""
    verb = "would remove" if doc["dry_run"] else "removed"
    lines = [f"{target}: {verb} {entry['path']} ({_mb(entry['bytes'])}: {entry['why']})" for entry in doc["removed"]]
    kept = sum(entry["bytes"] for entry in doc["kept"])
    lines.append(f"{target}: {verb} {len(doc['removed'])} item(s), {_mb(doc['freed_bytes'])}; kept "
                 f"{len(doc['kept'])} ({_mb(kept)}) under {doc['workdir']}")
    return lines


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def check_lines(probe: dict[str, Any], warnings: list[str], int8_types: str, int8_reason: str) -> list[str]:
    """`targets check`: what the probe found, one `key value` line each, then the warnings."""
    cpu = probe.get("cpu", {})
    runtimes = ", ".join(f"{k} {v.get('version', '')}" + (f" ({', '.join(v['providers'])})" if v.get("providers") else "")
                         for k, v in probe.get("runtimes", {}).items()) or "none"
    mem = probe.get("memory", {}).get("usable_bytes")
    board = probe.get("board", {})
    rows = [
        ("reachable", f"yes ({probe.get('hostname')})"),
        ("arch", f"{probe.get('arch')} {cpu.get('model') or ''}".strip()),
        ("isa", (" ".join(cpu.get("isa", [])) or "-") + (f" (no {', '.join(cpu['missing'])})" if cpu.get("missing") else "")),
        ("int8", f"{int8_types}: {int8_reason}"),
        ("cores", f"{probe.get('cores', {}).get('usable')} usable of {probe.get('cores', {}).get('online')}"),
        ("memory", f"{mem / 2**20:.0f} MiB usable" if mem else "-"),
        ("board", board.get("model") or board.get("nv_tegra_release") or "-"),
        ("os", probe.get("os", {}).get("name") or "-"),
        ("python", f"{probe.get('python', {}).get('version')} ({probe.get('python', {}).get('executable')})"),
        ("numpy", probe.get("numpy") or "MISSING"),
        ("runtimes", runtimes),
        ("governor", probe.get("governor") or "-"),
    ]
    if emulated(probe):
        emulation = probe["emulation"]
        rows.append(("emulated", f"yes, by {emulation.get('program')} on {emulation.get('host_machine')}: "
                                 "timings there are not latency figures"))
    return [f"{key:<10} {value}" for key, value in rows] + [f"warning: {w}" for w in warnings]


def target_doc(target: Target) -> dict[str, Any]:
    """A target definition as JSON-ready fields."""
    return {**target.__dict__, "runtimes": list(target.runtimes)}


def targets_table(found: list[Target]) -> Table:
    table = Table(title="Targets", title_justify="left")
    for col in ("name", "transport", "host", "arch", "runtimes", "defined in"):
        table.add_column(col)
    for t in found:
        host = "this machine" if t.transport == "local" else f"{t.user + '@' if t.user else ''}{t.host}"
        table.add_row(*map(cell, (t.name, t.transport, host, t.arch or "-", ", ".join(t.runtimes) or "-", t.source)))
    return table


def definition_lines(doc: dict[str, Any]) -> list[str]:
    """`targets show`: every field that is set, `key value`."""
    return [f"{key:<16} {value}" for key, value in doc.items() if value not in (None, "", [], ())]
