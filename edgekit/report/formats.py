"""Machine formats of a report: JSON, CSV and Markdown (for a pull-request comment).

Stable by construction, so they can be diffed and golden-tested: targets and variants keep the
store's order (targets by name, variants in the profile's recipe order), floats have a fixed
number of decimals per quantity, and nothing depends on when or where the report was made.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from . import fmt
from .compare import Comparison, Delta
from .data import Report, TargetReport, VariantRow
from .safe import printable, strict_json

# quantity -> decimals in JSON and CSV
DECIMALS = {"ms": 4, "mb": 2, "w": 3, "mj": 4, "fraction": 5, "cv": 4}


def _r(value: float | None, kind: str) -> float | None:
    return None if value is None else round(value, DECIMALS[kind])


def variant_dict(r: VariantRow) -> dict[str, Any]:
    ci = r.ci95
    return {
        "id": r.variant.id, "recipe": r.variant.recipe, "format": r.variant.format,
        "precision": r.variant.precision, "size_bytes": r.variant.size_bytes or None,
        "sha256": r.variant.sha256 or None, "status": r.status, "reason": r.reason,
        "p50_ms": _r(r.stat("p50_ms"), "ms"),
        "ci95_median_ms": [_r(ci[0], "ms"), _r(ci[1], "ms")] if ci else None,
        "p90_ms": _r(r.stat("p90_ms"), "ms"), "p99_ms": _r(r.stat("p99_ms"), "ms"),
        "n": int(r.stat("n")) if r.stat("n") is not None else None, "cv": _r(r.stat("cv"), "cv"),
        "peak_rss_mb": _r(r.peak_rss_mb, "mb"), "avg_power_w": _r(r.avg_power_w, "w"),
        "energy_mj": _r(r.energy_mj, "mj"), "power_note": r.power_note or None,
        "accuracy": _r(r.accuracy, "fraction"), "accuracy_drop": _r(r.accuracy_drop, "fraction"),
        "measured_at": r.measured_at, "emulated": r.emulated, "device_parity": _parity_dict(r.parity),
        "reused_from_run": r.reused_from,
    }


def _parity_dict(parity: dict[str, Any]) -> dict[str, Any] | None:
    if not parity:
        return None
    keys = ("passed", "samples", "top1_agreement", "host_top1_agreement", "max_abs_diff", "host_max_abs_diff",
            "allowed_max_abs_diff", "mean_abs_diff", "accuracy", "host_accuracy", "problems")
    return {k: (_r(parity[k], "fraction") if isinstance(parity.get(k), float) else parity.get(k))
            for k in keys if k in parity}


def target_dict(t: TargetReport) -> dict[str, Any]:
    chosen = t.chosen
    return {
        "target": t.target, "run_id": t.run_id, "model": t.model, "profile": t.profile, "objective": t.objective,
        "constraints": dict(sorted(t.constraints.items())), "started": t.started,
        "edgekit_version": t.edgekit_version, "chosen": chosen.variant.recipe if chosen else None,
        "device": {"arch": t.probe.get("arch"), "cpu": (t.probe.get("cpu") or {}).get("model"),
                   "emulated": t.emulated,
                   "board": (t.probe.get("board") or {}).get("model"), "governor": t.probe.get("governor"),
                   "runtimes": {k: v.get("version") for k, v in sorted((t.probe.get("runtimes") or {}).items())}},
        "variants": [variant_dict(r) for r in t.rows], "notes": t.notes,
    }


def to_json(report: Report) -> str:
    return strict_json({"schema": 1, "targets": [target_dict(t) for t in report.targets]}, indent=2) + "\n"


CSV_COLUMNS = ("target", "run_id", "model", "recipe", "format", "precision", "size_bytes", "sha256", "status",
               "p50_ms", "ci95_lo_ms", "ci95_hi_ms", "p90_ms", "p99_ms", "n", "cv", "peak_rss_mb", "avg_power_w",
               "energy_mj", "accuracy", "accuracy_drop", "reason")


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    d = DECIMALS
    for t in report.targets:
        for r in t.rows:
            ci = r.ci95 or (None, None)
            writer.writerow([t.target, t.run_id, t.model or "", r.variant.recipe, r.variant.format,
                             r.variant.precision, r.variant.size_bytes or "", r.variant.sha256, r.status,
                             fmt.fixed(r.stat("p50_ms"), d["ms"]), fmt.fixed(ci[0], d["ms"]),
                             fmt.fixed(ci[1], d["ms"]), fmt.fixed(r.stat("p90_ms"), d["ms"]),
                             fmt.fixed(r.stat("p99_ms"), d["ms"]), fmt.fixed(r.stat("n"), 0),
                             fmt.fixed(r.stat("cv"), d["cv"]), fmt.fixed(r.peak_rss_mb, d["mb"]),
                             fmt.fixed(r.avg_power_w, d["w"]), fmt.fixed(r.energy_mj, d["mj"]),
                             fmt.fixed(r.accuracy, d["fraction"]), fmt.fixed(r.accuracy_drop, d["fraction"]),
                             r.reason])
    return buf.getvalue()


def md_table(head: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    def cell(text: str) -> str:  # a device's error message can hold escape sequences: they go, as in tables
        return printable(text).replace("|", "\\|")

    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(report: Report) -> str:
    out = ["## edgekit report", ""]
    overview = []
    for t in report.targets:
        c = t.chosen
        overview.append([t.target, t.model or "?", str(t.run_id), c.variant.recipe if c else "none",
                         fmt.ms(c.stat("p50_ms")) if c else "-", fmt.ms(c.stat("p90_ms")) if c else "-",
                         fmt.mj(c.energy_mj) if c else "-", fmt.size(c.variant.size_bytes) if c else "-"])
    out += [md_table(["target", "model", "run", "chosen", "p50 ms", "p90 ms", "energy mJ", "size"], overview,
                     {2, 4, 5, 6, 7}), ""]
    for t in report.targets:
        limits = ", ".join(f"{k} = {v:g}" for k, v in sorted(t.constraints.items())) or "none"
        out += [f"### {printable(t.target)}", "",
                printable(f"Model {t.model or '?'}, run {t.run_id}, profile {t.profile or '?'} "
                          f"(objective {t.objective}; constraints {limits})."), ""]
        rows = []
        for r in t.rows:
            mark = {"chosen": "★", "eligible": "", "rejected": "✗"}[r.status]
            decision = f"{r.status}: {r.reason}" if r.reason else r.status
            rows.append([mark, r.variant.recipe, fmt.size(r.variant.size_bytes), fmt.ms(r.stat("p50_ms")),
                         fmt.ci(r.ci95), fmt.ms(r.stat("p90_ms")), fmt.ms(r.stat("p99_ms")), fmt.mb(r.peak_rss_mb),
                         fmt.watts(r.avg_power_w), fmt.mj(r.energy_mj), fmt.pct(r.accuracy),
                         fmt.pct(r.accuracy_drop), decision])
        out += [md_table(["", "recipe", "size", "p50 ms", "median 95% CI", "p90 ms", "p99 ms", "peak RSS MB",
                          "power W", "energy mJ", "accuracy %", "drop pts", "decision"], rows,
                         set(range(2, 12))), ""]
        out += [f"> {printable(n)}" for n in t.notes]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- comparisons


def _label(c: Comparison, i: int) -> str:
    t = c.columns[i]
    return t.target if c.kind == "targets" else f"run {t.run_id}"


def comparison_dict(c: Comparison) -> dict[str, Any]:
    recipes = []
    for recipe in c.recipes:
        values = []
        for i, col in enumerate(c.columns):
            r = col.row(recipe)
            entry: dict[str, Any] = {"column": _label(c, i), **({k: variant_dict(r)[k] for k in (
                "status", "p50_ms", "ci95_median_ms", "p90_ms", "p99_ms", "n", "peak_rss_mb", "energy_mj")}
                if r else {"status": "absent"})}
            d = c.deltas.get((i, recipe))
            if d is not None:
                entry.update({"change": _r(d.change, "fraction"),
                              "p_value": None if d.p_value is None else float(f"{d.p_value:.3g}"),
                              "ci_overlap": d.ci_overlap, "verdict": d.verdict})
            values.append(entry)
        recipes.append({"recipe": recipe, "columns": values})
    return {"schema": 1, "kind": c.kind, "alpha": c.alpha, "min_change": c.min_change,
            "columns": [{"label": _label(c, i), "target": t.target, "run_id": t.run_id, "model": t.model,
                         "started": t.started} for i, t in enumerate(c.columns)],
            "recipes": recipes, "regressions": [f"{d.recipe} ({_label(c, i)})" for i, d in c.regressions]}


def comparison_json(c: Comparison) -> str:
    return strict_json(comparison_dict(c), indent=2) + "\n"


COMPARE_CSV = ("recipe", "column", "target", "run_id", "status", "p50_ms", "ci95_lo_ms", "ci95_hi_ms", "p90_ms",
               "p99_ms", "energy_mj", "change", "p_value", "ci_overlap", "verdict")


def comparison_csv(c: Comparison) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COMPARE_CSV)
    ms = DECIMALS["ms"]
    for recipe in c.recipes:
        for i, col in enumerate(c.columns):
            r = col.row(recipe)
            ci = (r.ci95 if r else None) or (None, None)
            d = c.deltas.get((i, recipe))
            writer.writerow([recipe, _label(c, i), col.target, col.run_id, r.status if r else "absent",
                             fmt.fixed(r and r.stat("p50_ms"), ms), fmt.fixed(ci[0], ms), fmt.fixed(ci[1], ms),
                             fmt.fixed(r and r.stat("p90_ms"), ms), fmt.fixed(r and r.stat("p99_ms"), ms),
                             fmt.fixed(r and r.energy_mj, DECIMALS["mj"]),
                             fmt.fixed(d.change if d else None, DECIMALS["fraction"]),
                             "" if d is None or d.p_value is None else f"{d.p_value:.3g}",
                             "" if d is None or d.ci_overlap is None else str(d.ci_overlap).lower(),
                             d.verdict if d else ""])
    return buf.getvalue()


def delta_text(d: Delta | None) -> str:
    if d is None:
        return ""
    if d.change is None:
        return "missing"
    p = "" if d.p_value is None else f", p={d.p_value:.2g}"
    return f"{fmt.signed_pct(d.change)} {d.verdict}{p}"


def verdict_line(c: Comparison) -> str:
    slower = ", ".join(f"{d.recipe} ({_label(c, i)})" for i, d in c.regressions)
    if c.kind == "targets":
        return (f"Significantly slower than on {c.columns[0].target}: {slower}." if slower
                else f"Nothing significantly slower than on {c.columns[0].target}.")
    return f"Significant regression vs run {c.columns[0].run_id}: {slower}." if slower else "No significant regression."


def comparison_markdown(c: Comparison) -> str:
    head = ["recipe"]
    for i in range(len(c.columns)):
        head += [f"{_label(c, i)} p50 ms (95% CI)", f"{_label(c, i)} p90 ms"] + (["vs " + _label(c, 0)] if i else [])
    rows = []
    for recipe in c.recipes:
        row = [recipe]
        for i, col in enumerate(c.columns):
            r = col.row(recipe)
            row += [f"{fmt.ms(r.stat('p50_ms'))} ({fmt.ci(r.ci95)})" if r and r.ok else "-",
                    fmt.ms(r.stat("p90_ms")) if r else "-"] + ([delta_text(c.deltas.get((i, recipe)))] if i else [])
        rows.append(row)
    first = c.columns[0]
    what = (f"{first.model or '?'} on " + ", ".join(t.target for t in c.columns) if c.kind == "targets"
            else f"{first.model or '?'} on {first.target}, runs " + ", ".join(str(t.run_id) for t in c.columns))
    verdict = verdict_line(c)
    rule = (f"Significant: Mann-Whitney U p < {c.alpha:g}, medians' 95% CIs apart, and a change of at least "
            f"{c.min_change:.0%}.")
    return "\n".join([f"## edgekit compare: {what}", "", md_table(head, rows), "", verdict, "", rule]) + "\n"
