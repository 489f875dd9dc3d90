"""The self-contained HTML report: inline CSS and SVG only, so it opens offline and from an email.

Table cells carry `data-key` / `data-value` with the stored figure at full precision beside the
rounded text, so a reader (or a test) can check the page against the store.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any, Iterable

from . import fmt, svg
from .data import Report, TargetReport, VariantRow

CSS = """
:root { --fg:#0f172a; --muted:#64748b; --line:#e2e8f0; --ok:#15803d; --bad:#b91c1c; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0 auto; padding: 24px 32px 64px; max-width: 1500px; background: #f8fafc; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 36px 0 6px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; } .muted { color: var(--muted); }
table { border-collapse: collapse; background: #fff; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 6px; text-align: left; vertical-align: top; }
.scroll { overflow-x: auto; } td.reason { min-width: 18em; } td.recipe { white-space: nowrap; }
table.variants { font-size: 13px; } table.variants th { white-space: normal; }
th { background: #f1f5f9; font-weight: 600; white-space: nowrap; } td.num { text-align: right; white-space: nowrap; }
tr.chosen td { background: #f0fdf4; } tr.rejected td { color: #475569; }
.status-chosen { color: var(--ok); font-weight: 700; } .status-rejected { color: var(--bad); }
.plots { display: flex; flex-wrap: wrap; gap: 16px; margin: 12px 0; }
svg.plot { background: #fff; border: 1px solid var(--line); border-radius: 6px; font-size: 11px; fill: #334155; }
svg.plot .title { font-size: 13px; font-weight: 600; fill: var(--fg); } svg.plot .label { font-size: 12px; }
svg.plot .empty, svg.plot .missing { fill: var(--muted); font-style: italic; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; background: #fff; padding: 10px 14px;
           border: 1px solid var(--line); margin: 6px 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; word-break: break-all; }
code { font-size: 12px; } .note { background: #fffbeb; border-left: 3px solid #d97706; padding: 6px 10px; margin: 6px 0; }
.reused { color: #0e7490; font-size: 12px; white-space: nowrap; }
"""


def _num(key: str, value: float | None, text: str, title: str = "") -> str:
    data = f' data-key="{key}"' + (f' data-value="{json.dumps(value)}"' if value is not None else ' data-value=""')
    tip = f' title="{escape(title)}"' if title else ""
    return f'<td class="num"{data}{tip}>{escape(text)}</td>'


def _parity_cell(parity: dict[str, Any]) -> str:
    """The device's outputs against the host's for the same artifact and samples."""
    if not parity:
        return '<td class="parity">-</td>'
    verdict = "pass" if parity.get("passed") else "fail"
    tip = f"{parity.get('samples', 0)} evaluation samples on the device: top-1 agreement with the original, max |diff|"
    return f'<td class="parity {verdict}" data-parity="{verdict}" title="{escape(tip)}">{escape(fmt.parity(parity))}</td>'


def _outputs_tip(metrics: dict[str, Any]) -> str:
    """Every output's figures, for the cell's tooltip."""
    return "; ".join(f"{o.get('name')} {o.get('shape')}: cos {fmt.cosine(o.get('mean_cosine'))}, max |diff| "
                     f"{o.get('max_abs_diff', 0):.3g}" for o in metrics.get("outputs") or [] if isinstance(o, dict))


def _reused_mark(r: VariantRow) -> str:
    if r.reused_from is None:
        return ""
    return (f' <span class="reused" data-reused-from="{r.reused_from}" title="taken from the store, measured in '
            f'run {r.reused_from}">reused from run {r.reused_from}</span>')


def _variant_rows(t: TargetReport) -> str:
    out = []
    for r in t.rows:
        v = r.variant
        ci = r.ci95
        out.append(
            f'<tr class="{r.status}" data-variant="{escape(v.id)}" data-recipe="{escape(v.recipe)}">'
            f'<td class="recipe">{escape(v.recipe)}</td><td>{escape(v.format)}</td><td>{escape(v.precision)}</td>'
            + _num("size_bytes", v.size_bytes or None, fmt.size(v.size_bytes), v.sha256)
            + (_num("p50_ms", None, "emulated", "emulated: not a latency figure") if r.emulated
               else _num("p50_ms", r.stat("p50_ms"), fmt.ms(r.stat("p50_ms"))))
            + f'<td class="num" data-key="ci95_median_ms" data-value="{json.dumps(list(ci)) if ci else ""}">'
              f'{escape(fmt.ci(ci))}</td>'
            + _num("p90_ms", r.stat("p90_ms"), fmt.ms(r.stat("p90_ms")))
            + _num("p99_ms", r.stat("p99_ms"), fmt.ms(r.stat("p99_ms")))
            + _num("n", r.stat("n"), f"{r.stat('n'):.0f}" if r.stat("n") is not None else "-")
            + _num("peak_rss_mb", r.peak_rss_mb, fmt.mb(r.peak_rss_mb))
            + _num("avg_power_w", r.avg_power_w, fmt.watts(r.avg_power_w), r.power_note)
            + _num("energy_mj", r.energy_mj, fmt.mj(r.energy_mj), r.power_note)
            + _num("accuracy", r.accuracy, fmt.pct(r.accuracy))
            + _num("accuracy_drop", r.accuracy_drop, fmt.pct(r.accuracy_drop))
            + _num("mean_cosine", r.cosine, fmt.cosine(r.cosine), _outputs_tip(r.variant.metrics))
            + _parity_cell(r.parity)
            + f'<td class="reason status-{r.status}">{escape(r.status)}{": " + escape(r.reason) if r.reason else ""}'
              + _reused_mark(r) + "</td>"
            "</tr>")
    head = ("recipe", "format", "precision", "size", "p50 ms", "median 95% CI", "p90 ms", "p99 ms", "n",
            "peak RSS MB", "avg power W", "energy / inf. mJ", "accuracy %", "drop pts", "cosine (worst output)", "device vs host: top-1 or cos · max |Δ|",
            "decision")
    return (f'<div class="scroll"><table class="variants" data-target="{escape(t.target)}" data-run="{t.run_id}"><thead><tr>'
            + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>" + "".join(out) + "</tbody></table></div>")


def _plots(t: TargetReport) -> str:
    axis = t.fidelity
    points = [svg.Point(r.stat("p90_ms"), axis.value(r), r.variant.recipe, r.status == "chosen", r.pareto)
              for r in t.rows if r.stat("p90_ms") is not None and axis.value(r) is not None]
    title = f"{t.target}: p90 latency vs {axis.label.split(' (')[0]}"
    if points:
        pareto = svg.scatter("pareto", title, points, "p90 latency (ms)", axis.label, y_max=axis.y_max)
    else:
        pareto = svg.empty("pareto", title, "emulated: not a latency figure" if t.emulated
                           else "no fidelity figures (add [data] evaluation to the model spec)")
    measured = [r for r in t.rows if r.timed]  # emulated timings are not drawn as latency
    energy_bars = [svg.Bar(r.variant.recipe, r.energy_mj, highlight=r.status == "chosen", note=r.power_note)
                   for r in measured]
    if any(b.value is not None for b in energy_bars):
        energy = svg.bars("energy", f"{t.target}: energy per inference", energy_bars, "mJ / inference")
    else:
        notes = sorted({r.power_note for r in measured}) or (["emulated: not a power figure"] if t.emulated
                                                             else ["not measured"])
        energy = svg.empty("energy", f"{t.target}: energy per inference", "; ".join(notes))
    if t.emulated and not measured:
        dist = svg.empty("latency", f"{t.target}: latency distribution", "emulated: not a latency figure")
    else:
        dist = svg.boxes("latency", f"{t.target}: latency distribution (box: IQR, whiskers: p1–p99)",
                         [(r.variant.recipe, r.samples, r.status == "chosen") for r in measured], "latency (ms)")
    return f'<div class="plots">{pareto}{energy}{dist}</div>'


def _facts(pairs: Iterable[tuple[str, Any]]) -> str:
    items = [(k, v) for k, v in pairs if v not in (None, "", [], {})]
    if not items:
        return '<p class="muted">nothing recorded</p>'
    return '<dl class="facts">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(_text(v))}</dd>" for k, v in items) + "</dl>"


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}={_text(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _bytes(n: Any) -> str | None:
    return fmt.size(int(n)) if isinstance(n, (int, float)) and n else None


def provenance(t: TargetReport) -> list[tuple[str, Any]]:
    """Device facts from the probe and what each measurement recorded about its conditions."""
    p = t.probe
    cpu, cores, mem, os_ = p.get("cpu", {}), p.get("cores", {}), p.get("memory", {}), p.get("os", {})
    runtimes = {name: " ".join(str(x) for x in (info.get("version"), info.get("providers") and
                                                 "(" + ", ".join(info["providers"]) + ")", info.get("error")) if x)
                for name, info in p.get("runtimes", {}).items()}
    facts: list[tuple[str, Any]] = [
        ("host", p.get("hostname")), ("arch", p.get("arch")), ("CPU", cpu.get("model")),
        ("ISA", " ".join(cpu.get("isa") or []) + (f" (no {', '.join(cpu['missing'])})" if cpu.get("missing") else "")),
        ("emulation", (p.get("emulation") or {}).get("reason")),
        ("cores usable / online", f"{cores.get('usable')} / {cores.get('online')}" if cores else None),
        ("memory usable", _bytes(mem.get("usable_bytes"))), ("board", (p.get("board") or {}).get("model")),
        ("Jetson release", (p.get("board") or {}).get("nv_tegra_release")),
        ("OS", " ".join(x for x in (os_.get("name"), os_.get("kernel")) if x)),
        ("Python", (p.get("python") or {}).get("version")), ("numpy", p.get("numpy")),
        ("runtimes", runtimes), ("CPU governor", p.get("governor") or "unknown"),
        ("probe warnings", p.get("warnings")),
        ("edgekit", t.edgekit_version), ("run", f"{t.run_id} ({t.command}, started {t.started})"),
        ("profile", f"{t.profile}: objective {t.objective}, constraints "
                    + (", ".join(f"{k}={v:g}" for k, v in t.constraints.items()) or "none")),
    ]
    return facts


def _measurement_facts(r: VariantRow) -> list[tuple[str, Any]]:
    doc = r.measurement.document if r.measurement else {}
    power = r.power
    return [
        ("artifact sha256", r.variant.sha256), ("measured", r.measured_at),
        ("runtime", r.runtime), ("settings", doc.get("settings")), ("cold start ms", doc.get("cold")),
        ("window", doc.get("window")), ("power", power or r.power_note), ("thermal", doc.get("thermal")),
        ("throttling", doc.get("throttling") or doc.get("throttled")), ("frequencies", doc.get("frequencies")),
        ("warnings", doc.get("warnings")),
        ("error", f"{r.measurement.error_kind}: {r.measurement.error_message}"
         if r.measurement and r.measurement.status != "ok" else None),
        ("build", r.variant.error and f"failed: {r.variant.error}"),
        ("converters", r.variant.converters),
    ]


def emulation_notes(t: TargetReport) -> list[str]:
    emu = t.probe.get("emulation") or {}
    if not t.emulated:
        return []
    return [f"Emulated: not a latency figure. This target runs under user-mode emulation "
            f"({emu.get('program') or 'qemu'}), so its timings, memory and power are the emulator's and selection "
            "never ranks them. What it proves is in the device-vs-host column: the artifact's outputs computed "
            "on this ISA against the host's."]


def _target_section(t: TargetReport) -> str:
    chosen = t.chosen
    summary = (f"model <b>{escape(t.model or '?')}</b> · run {t.run_id} · profile {escape(t.profile or '?')} "
               f"(objective {escape(t.objective)}) · started {escape(t.started)} · chosen: "
               + (f'<b class="status-chosen">{escape(chosen.variant.recipe)}</b>' if chosen
                  else '<b class="status-rejected">none: emulated: not a latency figure</b>' if t.emulated
                  else '<b class="status-rejected">none meets the profile</b>'))
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in t.notes + emulation_notes(t))
    timed = sorted({r.inputs for r in t.rows if r.inputs})
    if timed:
        notes += '<p class="inputs muted">timed on ' + escape("; ".join(timed)) + "</p>"
    per_variant = "".join(f"<h3>{escape(r.variant.recipe)} <code>{escape(r.variant.id)}</code></h3>"
                          + _facts(_measurement_facts(r)) for r in t.rows)
    return (f'<section class="target" id="target-{escape(t.target)}" data-target="{escape(t.target)}">'
            f"<h2>{escape(t.target)}</h2><p>{summary}</p>{notes}{_variant_rows(t)}{_plots(t)}"
            f"<h3>Provenance</h3>{_facts(provenance(t))}"
            f"<details><summary>Per-variant conditions and artifact hashes</summary>{per_variant}</details>"
            "</section>")


def _overview(report: Report) -> str:
    rows, bars = [], []
    for t in report.targets:
        c = t.chosen
        if c is None:
            rows.append(f"<tr><td>{escape(t.target)}</td><td>{escape(t.model or '?')}</td><td>{t.run_id}</td>"
                        '<td class="status-rejected" colspan="6">'
                        + ("none chosen: emulated: not a latency figure" if t.emulated else "no variant meets the profile")
                        + "</td></tr>")
            bars.append(svg.Bar(t.target, None, note="none chosen"))
            continue
        ci = c.ci95
        rows.append(f'<tr data-target="{escape(t.target)}"><td>{escape(t.target)}</td><td>{escape(t.model or "?")}'
                    f"</td><td>{t.run_id}</td><td>{escape(c.variant.recipe)}</td>"
                    + _num("p50_ms", c.stat("p50_ms"), fmt.ms(c.stat("p50_ms")))
                    + _num("p90_ms", c.stat("p90_ms"), fmt.ms(c.stat("p90_ms")))
                    + _num("energy_mj", c.energy_mj, fmt.mj(c.energy_mj), c.power_note)
                    + _num("size_bytes", c.variant.size_bytes, fmt.size(c.variant.size_bytes))
                    + _num("accuracy_drop", c.accuracy_drop, fmt.pct(c.accuracy_drop)) + "</tr>")
        bars.append(svg.Bar(f"{t.target} · {c.variant.recipe}", c.stat("p50_ms"), ci[0] if ci else None,
                            ci[1] if ci else None, highlight=True))
    head = ("target", "model", "run", "chosen", "p50 ms", "p90 ms", "energy / inf. mJ", "size", "drop pts")
    table = ('<table class="overview"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    plot = svg.bars("cross-target", "Chosen variant per target: median latency (whiskers: 95% CI)", bars,
                    "p50 latency (ms)")
    return f'<section id="overview"><h2>Across targets</h2>{table}<div class="plots">{plot}</div></section>'


def render(report: Report) -> str:
    """The whole page as one string."""
    targets = ", ".join(t.target for t in report.targets)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            f"<title>edgekit report: {escape(targets)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>edgekit report</h1><p class=\"muted\">targets {escape(targets)} · generated "
            f"{escape(report.generated)} by edgekit {escape(report.edgekit_version)} from "
            f"<code>{escape(report.db)}</code></p></header>"
            + _overview(report) + "".join(_target_section(t) for t in report.targets)
            + "</body></html>\n")
