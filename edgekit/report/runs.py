"""What a `profile` or `deploy` run prints when it ends: its builds, its decision, what it installed.

Pure: `RunResult`s in, tables and lines out (`output.show` prints them); JSON documents for --json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import EdgekitError
from ..pipeline import RunResult
from .table import compress_table, selection_table


def run_summary(result: RunResult, installed: bool, db_path: Path) -> list[Any]:
    """One target's builds and decision; for a deploy, the smoke test and where it was installed."""
    parts: list[Any] = [compress_table([(v, result.cached[v.id]) for v in result.variants]),
                        selection_table(result.selection, result.target)]
    target = result.target
    if installed:
        chosen = result.selection.chosen.variant
        smoke = result.smoke
        deployed = result.status["models"][result.model]
        parts += [f"Smoke test on {target}: passed ({smoke['samples']} samples, max |diff| "
                  f"{smoke['max_abs_diff']:.3g} <= {smoke['allowed_max_abs_diff']:.3g})",
                  f"Installed {chosen.recipe} ({chosen.id}) on {target}: {deployed['path']}",
                  f"Results: {db_path} (run {result.run_id}). Undo with: edgekit rollback --target {target}"]
    elif result.selection.chosen is None and result.selection.emulated:
        parts.append(f"{target} runs under emulation: its timings are not latency figures, so no variant is "
                     f"chosen there. The device parity column is what this target proves.")
    return parts


def fleet_doc(outcome: dict[str, RunResult | EdgekitError]) -> dict[str, Any]:
    """--json for a fleet: each target's run, or its error."""
    return {"targets": {name: ({"error": {"kind": getattr(r, "kind", "error"), "message": str(r)}}
                               if isinstance(r, EdgekitError) else r.to_dict()) for name, r in outcome.items()}}


def fleet_summary(outcome: dict[str, RunResult | EdgekitError], db_path: Path) -> list[Any]:
    """Every artifact built once (targets of one ISA share them), then each target's decision or error."""
    built: dict[str, tuple[Any, bool]] = {}
    for result in outcome.values():
        if not isinstance(result, EdgekitError):
            built.update({v.id: (v, result.cached.get(v.id, False)) for v in result.variants})
    parts: list[Any] = [compress_table(list(built.values()))] if built else []
    for name, result in outcome.items():
        parts.append(f"{name}: FAILED: {result}" if isinstance(result, EdgekitError)
                     else selection_table(result.selection, name))
    failed = sum(isinstance(r, EdgekitError) for r in outcome.values())
    parts.append(f"Profiled {len(outcome) - failed} of {len(outcome)} targets; results: {db_path}")
    return parts
