"""Constraints + objective -> the chosen variant, with a reason for every other one.

Pure: variants and measurements in, a Selection out. Latency is ranked by the paired ratios
against the run's baseline variant when every candidate has one (measured in the same interleaved
rounds, so what drifted between rounds cancels), else by the figure itself. When the best is
within noise of others (their ratios' 95 % intervals overlap; without ratios, their medians'),
the smallest artifact among them wins, so the choice does not flip between runs on a noisy device.

Two facts from the device outrank any figure: a variant whose outputs on the device differ from
the host's beyond what the same artifact allows there is rejected, and timings taken under
emulation are never ranked (they are the emulator's, not the board's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import SelectionError, UsageError
from .records import Decision, Measurement, Variant
from .settings import FIDELITY, SelectSettings

LATENCY_OBJECTIVES = ("p50_ms", "p90_ms", "p99_ms")
EMULATED = "emulated: not a latency figure"
DEVICE_FIGURES = ("max_peak_rss_mb", "max_p90_ms")  # constraints measured on the device


# The figure each constraint judges, from the variant's host metrics or its measurement.
_FIGURES = {"max_accuracy_drop": "accuracy_drop", "min_top1_agreement": "top1_agreement", "min_cosine": "mean_cosine",
            "max_abs_diff": "max_abs_diff", "max_metric_drop": "metric_drop"}


def _finite(value: object) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


@dataclass
class Row:
    variant: Variant
    measurement: Measurement | None
    status: str  # chosen | eligible | rejected
    reason: str
    objective: float | None = None

    @property
    def figures(self) -> dict[str, float | None]:
        """Every constraint's figure for this variant, by constraint name (None: not known)."""
        out = {key: _finite(self.variant.metrics.get(name)) for key, name in _FIGURES.items()}
        m = self.measurement if self.measurement is not None and self.measurement.status == "ok" else None
        out["max_peak_rss_mb"] = _finite(m.figure("peak_rss_mb")) if m else None
        out["max_p90_ms"] = _finite(m.figure("p90_ms")) if m else None
        out["max_size_mb"] = self.variant.size_bytes / 1e6 if self.variant.size_bytes else None
        return out

    def decision(self, objective: str) -> Decision:
        return Decision(self.variant.id, self.status, self.reason, objective, _finite(self.objective), self.figures)


@dataclass
class Selection:
    objective: str
    rows: list[Row]

    def decisions(self) -> list[Decision]:
        """What was decided about each variant, in row order: what a run records."""
        return [r.decision(self.objective) for r in self.rows]

    @property
    def emulated(self) -> bool:
        return any(r.measurement is not None and r.measurement.emulated for r in self.rows)

    @property
    def chosen(self) -> Row | None:
        return next((r for r in self.rows if r.status == "chosen"), None)


def _objective_value(objective: str, variant: Variant, m: Measurement) -> float | None:
    if objective == "size_bytes":
        return float(variant.size_bytes)
    return m.figure(objective)


COSINE_FALLBACK = 0.99  # what max_accuracy_drop means for outputs that are not class scores


def fidelity_violations(variant: Variant, constraints: dict[str, float]) -> list[str]:
    """The fidelity constraints a variant breaks, each naming the constraint and the figure.

    `max_accuracy_drop` needs a classifier output; on any other model (an embedder, a detector,
    a regressor) it falls back to a worst-output cosine of at least 0.99 unless the profile states
    its own fidelity constraint, so a profile written for classifiers still judges them fairly.
    """
    asked = [k for k in FIDELITY if k in constraints]
    if not asked:
        return []
    m = variant.metrics
    if not m:
        return [f"no fidelity figures to check {', '.join(asked)} (add [data] evaluation)"]
    out = []
    if m.get("nonfinite"):
        out.append(f"{m['nonfinite']} output values are NaN or infinite where the original's are finite")
    cosine = m.get("mean_cosine")
    worst = min(m.get("outputs") or [{}], key=lambda o: o.get("mean_cosine", 1.0)).get("name")
    where = f" (worst output {worst})" if worst and len(m.get("outputs") or []) > 1 else ""
    if "max_accuracy_drop" in constraints:
        limit = constraints["max_accuracy_drop"]
        drop = m.get("accuracy_drop")
        if drop is not None:
            if drop > limit + 1e-12:
                out.append(f"accuracy drop {drop * 100:.2f} pts > {limit * 100:.2f} (max_accuracy_drop)")
        elif len(asked) == 1 and cosine is not None:
            if cosine < COSINE_FALLBACK:
                out.append(f"cosine {cosine:.4f}{where} < {COSINE_FALLBACK} (max_accuracy_drop needs class scores: "
                           f"labels or task = \"classification\"; other outputs are judged by cosine; set min_cosine "
                           f"to choose the limit)")
    if "min_top1_agreement" in constraints:
        agreement = m.get("top1_agreement")
        if agreement is None:
            out.append("min_top1_agreement: no classifier output (give labels or set task = \"classification\")")
        elif agreement < constraints["min_top1_agreement"] - 1e-12:
            out.append(f"top-1 agreement {agreement:.3f} < {constraints['min_top1_agreement']:g} (min_top1_agreement)")
    if "min_cosine" in constraints and cosine is not None and cosine < constraints["min_cosine"] - 1e-12:
        out.append(f"cosine {cosine:.4f}{where} < {constraints['min_cosine']:g} (min_cosine)")
    if "max_abs_diff" in constraints and m.get("max_abs_diff") is not None \
            and m["max_abs_diff"] > constraints["max_abs_diff"]:
        out.append(f"max |diff| {m['max_abs_diff']:.3g} > {constraints['max_abs_diff']:g} (max_abs_diff)")
    if "max_metric_drop" in constraints:
        drop = m.get("metric_drop")
        if drop is None:
            out.append("max_metric_drop needs a user metric: set [data] metric = \"module:function\"")
        elif drop > constraints["max_metric_drop"] + 1e-12:
            out.append(f"{m.get('metric_name', 'metric')} drop {drop:.4g} > {constraints['max_metric_drop']:g} "
                       f"(max_metric_drop)")
    return out


def _violations(variant: Variant, m: Measurement, constraints: dict[str, float]) -> list[str]:
    if m.emulated:  # latency and memory under qemu are the emulator's
        constraints = {k: v for k, v in constraints.items() if k not in DEVICE_FIGURES}
    out = fidelity_violations(variant, constraints)
    checks = (("max_peak_rss_mb", m.figure("peak_rss_mb"), "peak RSS", "MB"),
              ("max_p90_ms", m.figure("p90_ms"), "p90", "ms"),
              ("max_size_mb", variant.size_bytes / 1e6, "size", "MB"))
    for key, value, label, unit in checks:
        if key in constraints and value is not None and value > constraints[key]:
            out.append(f"{label} {value:.3g} {unit} > {constraints[key]:g}")
    return out


def _ci(m: Measurement) -> tuple[float, float] | None:
    ci = m.stats.get("ci95_median_ms")
    return (float(ci[0]), float(ci[1])) if ci and len(ci) == 2 else None


Ratio = tuple[float, tuple[float, float], str]  # median ratio, its 95 % CI, the baseline recipe


def _ratio(m: Measurement, objective: str) -> Ratio | None:
    paired = m.paired
    stat = (paired.get("stats") or {}).get(objective) or {}
    ci = stat.get("ci95")
    if not isinstance(stat.get("ratio"), (int, float)) or not ci or len(ci) != 2 or not paired.get("baseline"):
        return None
    return float(stat["ratio"]), (float(ci[0]), float(ci[1])), str(paired["baseline"])


def _paired(rows: list[Row], objective: str) -> dict[int, Ratio] | None:
    """Every row's ratio, when all have one against the same baseline; else None (rank by figures)."""
    found = {id(r): _ratio(r.measurement, objective) for r in rows}
    if any(v is None for v in found.values()) or len({v[2] for v in found.values()}) != 1:
        return None
    return found  # type: ignore[return-value]


def _ratio_text(objective: str, ratio: Ratio) -> str:
    value, (lo, hi), baseline = ratio
    return f"{objective} ratio {value:.2f} [{lo:.2f}, {hi:.2f}] vs {baseline}"


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _rank_by_ratio(feasible: list[Row], objective: str, ratios: dict[int, Ratio]) -> None:
    feasible.sort(key=lambda r: (ratios[id(r)][0], r.variant.size_bytes))
    best = ratios[id(feasible[0])]
    tied = [r for r in feasible if r is feasible[0] or _overlap(ratios[id(r)][1], best[1])]
    winner = min(tied, key=lambda r: (r.variant.size_bytes, ratios[id(r)][0]))
    winner.status = "chosen"
    mine = _ratio_text(objective, ratios[id(winner)])
    if len(tied) > 1:
        others = ", ".join(r.variant.recipe for r in tied if r is not winner)
        winner.reason = (f"lowest {objective} within noise of {others} (paired ratio CIs overlap); smallest "
                         f"artifact; {mine}")
    else:
        winner.reason = f"lowest {objective} meeting every constraint; {mine}"
    for r in feasible:
        if r is not winner:
            delta = (ratios[id(r)][0] / ratios[id(winner)][0] - 1) * 100 if ratios[id(winner)][0] else 0.0
            r.reason = (f"{objective} {delta:+.0f}% vs chosen; {_ratio_text(objective, ratios[id(r)])}"
                        + ("; within noise but larger" if r in tied else ""))


def _rank_by_figure(feasible: list[Row], objective: str) -> None:
    """Without paired ratios (one round, measurements from an older store): the figures and their CIs."""
    feasible.sort(key=lambda r: (r.objective, r.variant.size_bytes))
    best = feasible[0]
    tied = [best]
    if objective in LATENCY_OBJECTIVES and _ci(best.measurement):
        lo_best, hi_best = _ci(best.measurement)
        for r in feasible[1:]:
            ci = _ci(r.measurement)
            if ci and ci[0] <= hi_best and lo_best <= ci[1]:
                tied.append(r)
    winner = min(tied, key=lambda r: (r.variant.size_bytes, r.objective))
    winner.status = "chosen"
    if len(tied) > 1:
        others = ", ".join(r.variant.recipe for r in tied if r is not winner)
        winner.reason = f"lowest {objective} within noise of {others} (median CIs overlap); smallest artifact"
    else:
        winner.reason = f"lowest {objective} meeting every constraint"
    for r in feasible:
        if r is not winner:
            delta = (r.objective / winner.objective - 1) * 100 if winner.objective else 0.0
            r.reason = (f"{objective} {delta:+.0f}% vs chosen" +
                        ("; within noise but larger" if r in tied else ""))


def select(variants: list[Variant], measurements: dict[str, Measurement], settings: SelectSettings) -> Selection:
    objective = settings.objective
    rows: list[Row] = []
    feasible: list[Row] = []
    for v in variants:
        m = measurements.get(v.id)
        if v.status != "ok":
            rows.append(Row(v, m, "rejected", f"build failed: {v.error}"))
            continue
        if m is None:
            rows.append(Row(v, None, "rejected", "not measured on this target"))
            continue
        if m.status != "ok":
            rows.append(Row(v, m, "rejected", f"benchmark failed ({m.error_kind}): {m.error_message}"))
            continue
        parity = m.parity
        if parity and not parity.get("passed", True):
            rows.append(Row(v, m, "rejected", "outputs on the device differ from the host's: "
                            + "; ".join(parity.get("problems") or ["parity check failed"])))
            continue
        problems = _violations(v, m, settings.constraints)
        if m.emulated and objective != "size_bytes":
            rows.append(Row(v, m, "rejected" if problems else "eligible",
                            "; ".join(problems) if problems else f"{EMULATED}: not ranked"))
            continue
        value = _objective_value(objective, v, m)
        if value is None:
            problems.append(f"{objective} was not measured")
        row = Row(v, m, "rejected" if problems else "eligible", "; ".join(problems), value)
        rows.append(row)
        if not problems:
            feasible.append(row)

    if feasible:
        ratios = _paired(feasible, objective) if objective in LATENCY_OBJECTIVES else None
        if ratios is not None:
            _rank_by_ratio(feasible, objective, ratios)
        else:
            _rank_by_figure(feasible, objective)
    return Selection(objective, rows)


def recorded(objective: str, decisions: list[Decision], variants: dict[str, Variant],
             measurements: dict[str, Measurement]) -> Selection:
    """The selection a run recorded, rebuilt from its decisions (pure: nothing is judged again)."""
    rows = [Row(variants[d.variant_id], measurements.get(d.variant_id), d.status, d.reason, d.objective_value)
            for d in decisions if d.variant_id in variants]
    return Selection(objective, rows)


def choose_named(selection: Selection, recipe: str, target: str, canonical: str | None = None) -> None:
    """Make the variant the user named the chosen one, if nothing the device showed rules it out.

    `recipe` is as the user wrote it (a recipe or a variant id); `canonical` its canonical spelling,
    which the caller works out (`registry.canonical_name`): selection knows nothing of recipes."""
    row = next((r for r in selection.rows
                if r.variant.recipe in (recipe, canonical or recipe) or r.variant.id == recipe), None)
    if row is None:
        known = ", ".join(r.variant.recipe for r in selection.rows)
        raise UsageError(f"--variant {recipe} is not one of the profile's variants ({known}). "
                         f"Fix: name one of those, or add it with a profile that builds it")
    if row.status == "rejected":
        raise SelectionError(f"--variant {row.variant.recipe} cannot be deployed on {target}: {row.reason}. "
                             f"Fix: name another variant")
    previous = selection.chosen
    if previous is not None and previous is not row:
        previous.status, previous.reason = "eligible", "the profile's choice; --variant named another"
    row.status, row.reason = "chosen", "named with --variant" + (f" ({row.reason})" if row.reason else "")
