"""Terminal tables (rich). Colour on a TTY, plain aligned text otherwise."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from ..agent import cpuload
from ..records import Variant
from ..select import Selection
from . import fmt
from .safe import cell, printable, text as safe_text


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:+.2f}" if signed else f"{value * 100:.2f}"


def _state(v: Variant, cached: bool) -> Text:
    """cached/built, plus what the user must not miss: over the accuracy budget, other warnings."""
    text = Text("cached" if cached else "built")
    if v.metrics.get("within_budget") is False:
        text.append(" · over accuracy budget", style="bold red")
    elif v.warnings:
        text.append(f" · {printable(v.warnings[0])[:60]}", style="yellow")
    return text


def parity_text(parity: dict) -> Text:
    text = printable(fmt.parity(parity))
    return Text(text[:72], style="green" if text.startswith("✓") else "red" if text.startswith("✗") else "")


EMULATED_CELL = "emulated"


def _quantized(v: Variant) -> str:
    """'12/12 ops' from the count compress recorded (compress/quantized.py); '-' for full precision."""
    q = v.options.get("quantized")
    if not isinstance(q, dict):
        return "-"
    return f"{q['quantized_ops']}/{q['compute_ops']} ops" if isinstance(q.get("compute_ops"), int) else "unknown"


def measurement_note(m) -> Text:
    """Where a measurement came from when not from this run, and a busy device: what a reader must not miss."""
    text = Text()
    if m is not None and m.reused:
        text.append(f" · reused from run {m.reused_from}" if m.reused_from else " · reused", style="cyan")
    load = (m.document.get("load") or {}) if m is not None else {}
    if cpuload.warning(load):  # the agent's warning, in short
        text.append(f" · others used {load['other_cpu'] * 100:.0f} % of the CPU", style="yellow")
    return text


def compress_table(variants: list[tuple[Variant, bool]]) -> Table:
    table = Table(title="Variants", title_justify="left")
    for col, justify in (("recipe", "left"), ("size", "right"), ("quantized", "right"),
                         ("accuracy %", "right"), ("drop pts", "right"), ("top-1 agree %", "right"),
                         ("cosine", "right"), ("max |diff|", "right"), ("", "left")):
        table.add_column(col, justify=justify)
    outputs = 0
    for v, cached in variants:
        m = v.metrics
        if v.status != "ok":
            table.add_row(cell(v.recipe), "-", "-", "-", "-", "-", "-", "-",
                          safe_text(f"failed: {v.error}", style="red"))
            continue
        outputs = max(outputs, len(m.get("outputs") or []))
        table.add_row(cell(v.recipe), fmt.size(v.size_bytes), _quantized(v), _pct(m.get("accuracy")),
                      _pct(m.get("accuracy_drop")), _pct(m.get("top1_agreement")), fmt.cosine(m.get("mean_cosine")),
                      f"{m['max_abs_diff']:.2g}" if "max_abs_diff" in m else "-", _state(v, cached))
    if outputs > 1:
        table.caption = f"cosine and max |diff|: the worst of the model's {outputs} outputs"
    return table


def inputs_caption(selection: Selection) -> str | None:
    """What the device timed: the shapes each variant was fed and where they came from."""
    seen = []
    for r in selection.rows:
        m = r.measurement
        if m is None or m.status != "ok":
            continue
        text = fmt.inputs(m.document)
        if text and text not in seen:
            seen.append(text)
    return printable("timed on " + "; ".join(seen)) if seen else None


def graph_table(io, name: str) -> Table:
    """`edgekit inspect`: inputs and outputs of an ONNX graph; named dims are the ones to declare."""
    table = Table(title=safe_text(f"{name}: opset {io.opset or '?'}" + (f", made by {io.producer}" if io.producer
                                                                      else "")), title_justify="left")
    for col in ("", "name", "shape", "dtype"):
        table.add_column(col)
    for kind, tensors in (("input", io.inputs), ("output", io.outputs)):
        for t in tensors:
            shape = Text("[")
            for i, d in enumerate(t.dims):
                shape.append(("" if i == 0 else ", "))
                shape.append(printable(d), style="bold yellow" if isinstance(d, str) else "")
            shape.append("]")
            table.add_row(kind, cell(t.name), shape, cell(t.dtype))
    dynamic = sorted({d for t in io.inputs for d in t.dynamic})
    if dynamic:
        table.caption = safe_text(f"dynamic: {', '.join(dynamic)} - declare a size for each in [model] inputs "
                             f"(or --input NAME:1x3x320x320)")
    return table


PARITY_COLUMN = (("device vs host: top-1 · max|Δ|", "left"),)  # shown when the run compared device outputs with the host's


def selection_table(selection: Selection, target: str) -> Table:
    with_parity = any(r.measurement is not None and r.measurement.parity for r in selection.rows)
    table = Table(title=safe_text(f"{target}: variants by {selection.objective}"), title_justify="left")
    for col, justify in (("", "left"), ("recipe", "left"), ("size", "right"), ("accuracy %", "right"),
                         ("drop pts", "right"), ("p50 ms", "right"), ("p90 ms", "right"), ("p99 ms", "right"),
                         ("CV %", "right"), ("peak RSS MB", "right")) + PARITY_COLUMN * with_parity + (
                         ("decision", "left"),):
        table.add_column(col, justify=justify)
    for row in selection.rows:
        v, m = row.variant, row.measurement
        stats = m.stats if m and m.status == "ok" else {}
        rss = m.memory.get("peak_rss_mb") if m and m.status == "ok" else None
        mark, style = {"chosen": ("★", "bold green"), "eligible": ("", ""), "rejected": ("✗", "red")}[row.status]
        decision = safe_text(f"{row.status}: {row.reason}" if row.reason else row.status, style=style)
        decision.append_text(measurement_note(m))
        if m is not None and m.emulated:  # the emulator's timings: never shown as latency
            timing = [Text(EMULATED_CELL, style="yellow"), "-", "-", "-", "-"]
        else:
            timing = [fmt.ms(stats.get("p50_ms")), fmt.ms(stats.get("p90_ms")), fmt.ms(stats.get("p99_ms")),
                      f"{stats['cv'] * 100:.1f}" if "cv" in stats else "-", f"{rss:.0f}" if rss is not None else "-"]
        table.add_row(Text(mark, style=style), cell(v.recipe), fmt.size(v.size_bytes),
                      _pct(v.metrics.get("accuracy")), _pct(v.metrics.get("accuracy_drop")),
                      *timing, *[parity_text(m.parity if m else {})] * with_parity, decision)
    caption = inputs_caption(selection)
    table.caption = Text(caption) if caption else None
    return table


def report_table(t) -> Table:
    """One target of a report (`report.data.TargetReport`): the selection table plus CI, power, energy."""
    with_parity = any(r.parity for r in t.rows)

    table = Table(title=safe_text(f"{t.target}: {t.model or '?'}, run {t.run_id}, profile {t.profile or '?'} "
                                  f"(by {t.objective})"), title_justify="left")
    for col, justify in (("", "left"), ("recipe", "left"), ("size", "right"), ("p50 ms", "right"),
                         ("95% CI", "right"), ("p90 ms", "right"), ("p99 ms", "right"), ("peak RSS MB", "right"),
                         ("power W", "right"), ("energy mJ", "right"), ("accuracy %", "right"),
                         ("drop pts", "right")) + PARITY_COLUMN * with_parity + (("decision", "left"),):
        table.add_column(col, justify=justify)
    for r in t.rows:
        mark, style = {"chosen": ("★", "bold green"), "eligible": ("", ""), "rejected": ("✗", "red")}[r.status]
        p50 = Text(EMULATED_CELL, style="yellow") if r.emulated else fmt.ms(r.stat("p50_ms"))
        table.add_row(Text(mark, style=style), cell(r.variant.recipe), fmt.size(r.variant.size_bytes),
                      p50, fmt.ci(r.ci95), fmt.ms(r.stat("p90_ms")), fmt.ms(r.stat("p99_ms")),
                      fmt.mb(r.peak_rss_mb), fmt.watts(r.avg_power_w), fmt.mj(r.energy_mj), fmt.pct(r.accuracy),
                      fmt.pct(r.accuracy_drop), *[parity_text(r.parity)] * with_parity,
                      safe_text(f"{r.status}: {r.reason}" if r.reason else r.status, style=style)
                      + measurement_note(r.measurement))
    return table


def comparison_table(c) -> Table:
    """A `report.compare.Comparison`: recipes down, runs or targets across, deltas vs the first column."""
    from .formats import delta_text

    labels = [t.target if c.kind == "targets" else f"run {t.run_id}" for t in c.columns]
    first = c.columns[0]
    title = (f"{first.model or '?'}: " + " vs ".join(labels) + (f" on {first.target}" if c.kind == "runs" else ""))
    table = Table(title=safe_text(title), title_justify="left")
    table.add_column("recipe")
    for i, label in enumerate(labels):
        table.add_column(safe_text(f"{label} p50 ms (95% CI)"), justify="right")
        table.add_column(safe_text(f"{label} p90 ms"), justify="right")
        if i:
            table.add_column(safe_text(f"vs {labels[0]}"), justify="left")
    for recipe in c.recipes:
        cells: list = [cell(recipe)]
        for i, col in enumerate(c.columns):
            r = col.row(recipe)
            cells += [f"{fmt.ms(r.stat('p50_ms'))} ({fmt.ci(r.ci95)})" if r and r.ok else "-",
                      fmt.ms(r.stat("p90_ms")) if r else "-"]
            if i:
                d = c.deltas.get((i, recipe))
                style = {"slower": "bold red", "faster": "green"}.get(d.verdict if d else "", "")
                cells.append(safe_text(delta_text(d), style=style))
        table.add_row(*cells)
    return table


def recipes_tables(catalog: dict) -> list[Table]:
    """`edgekit recipes`: the recipes, the technique steps that go in front of them and the profile's
    `[techniques]` defaults, from the declared catalog (`compress.catalog`). Cells and titles are
    Text, so the brackets of a usage stay literal."""
    recipes = Table(title=Text(f"Recipes: {catalog['grammar']}"), title_justify="left")
    for col in ("recipe", "format", "precision", "runtime", "options", "what"):
        recipes.add_column(col)
    for r in catalog["recipes"]:
        options = ", ".join(f"{o['name']}={o['values']}" for o in r["options"])
        recipes.add_row(*(safe_text(v) for v in (r["name"], r["format"], r["precision"], r["runtime"], options,
                                                  r["summary"])))
    steps = Table(title=Text("Technique steps: STEP+...+RECIPE, e.g. prune:0.5+kd+onnx:int8-static"),
                  title_justify="left")
    for col in ("step", "value", "what"):
        steps.add_column(col, overflow="fold")
    for t in catalog["techniques"]:
        value = t["value"]
        steps.add_row(safe_text(t["usage"]), safe_text(f"{value['name']}: {value['values']}" if value else "-"),
                      safe_text(t["summary"]))
    defaults = Table(title=Text("[techniques] in a profile: the steps' defaults"), title_justify="left")
    for col in ("key", "values", "default", "what"):
        defaults.add_column(col)
    for o in catalog["profile_techniques"]:
        shown = o["default_from"] if o["default"] is None else o["default"]
        defaults.add_row(*(safe_text(v) for v in (o["name"], o["values"], _plain(shown), o["help"])))
    return [recipes, steps, defaults]


def _plain(value) -> str:
    """A default from the catalog as the docs write it: true, 0.001, none."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
