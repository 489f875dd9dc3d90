"""Compare the same recipes across targets, or one target across runs, and flag real regressions.

A change is *significant* only when all of these hold, so noise on a busy device is not a regression:
  - a two-sided Mann-Whitney U test on the stored latency samples gives p < alpha (default 0.01);
  - the medians' bootstrap 95 % intervals do not overlap;
  - the median moved by at least `min_change` (default 5 %), since both tests above find even tiny
    shifts significant with thousands of samples, and latency samples are autocorrelated.
Without stored samples (older stores) the interval test alone decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..results import ResultsStore
from .data import TargetReport, VariantRow, latest_run, run_targets, target_report

ALPHA = 0.01
MIN_CHANGE = 0.05


def mann_whitney_u(a: list[float], b: list[float]) -> tuple[float, float]:
    """U statistic of `a` and the two-sided p-value: normal approximation with tie and continuity
    corrections (scipy.stats.mannwhitneyu(method="asymptotic") gives the same numbers, and a test
    holds it to them). Written out because importing scipy.stats costs about a second on every
    `edgekit compare`/`check`, four times this module's whole import."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples must be non-empty")
    both = np.concatenate([x, y])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    # average ranks for ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_vals)) + 1]
    ends = np.r_[starts[1:], len(both)]
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, ends - starts)
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    tie_sizes = (ends - starts).astype(float)
    tie_term = float((tie_sizes ** 3 - tie_sizes).sum())
    sigma = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))))
    if sigma == 0:
        return u1, 1.0
    mu = n1 * n2 / 2.0
    z = (abs(u1 - mu) - 0.5) / sigma
    p = math.erfc(max(z, 0.0) / math.sqrt(2.0))
    return u1, min(1.0, p)


@dataclass
class Delta:
    """One recipe in a baseline and a candidate (another run, or another target)."""

    recipe: str
    base: VariantRow | None
    cand: VariantRow | None
    change: float | None = None  # candidate median / baseline median - 1
    p_value: float | None = None
    ci_overlap: bool | None = None
    significant: bool = False

    @property
    def verdict(self) -> str:
        if self.change is None:
            return "missing"
        if not self.significant:
            return "same"
        return "slower" if self.change > 0 else "faster"


def delta(recipe: str, base: VariantRow | None, cand: VariantRow | None, alpha: float = ALPHA,
          min_change: float = MIN_CHANGE) -> Delta:
    d = Delta(recipe, base, cand)
    if base is None or cand is None or base.stat("p50_ms") is None or cand.stat("p50_ms") is None:
        return d
    b50, c50 = base.stat("p50_ms"), cand.stat("p50_ms")
    d.change = c50 / b50 - 1 if b50 else None
    if d.change is None:
        return d
    ci_b, ci_c = base.ci95, cand.ci95
    if ci_b and ci_c:
        d.ci_overlap = ci_b[0] <= ci_c[1] and ci_c[0] <= ci_b[1]
    if base.samples and cand.samples:
        d.p_value = mann_whitney_u(cand.samples, base.samples)[1]
    checks = []
    if d.p_value is not None:
        checks.append(d.p_value < alpha)
    if d.ci_overlap is not None:
        checks.append(not d.ci_overlap)
    d.significant = bool(checks) and all(checks) and abs(d.change) >= min_change
    return d


def recipes_of(reports: list[TargetReport]) -> list[str]:
    """Recipes in first-seen order across the reports."""
    seen: list[str] = []
    for t in reports:
        for r in t.rows:
            if r.variant.recipe not in seen:
                seen.append(r.variant.recipe)
    return seen


@dataclass
class Comparison:
    """Columns (targets or runs) over recipes; deltas are against the first column."""

    kind: str  # "targets" | "runs"
    columns: list[TargetReport]
    recipes: list[str]
    deltas: dict[tuple[int, str], Delta]  # (column index >= 1, recipe) -> delta vs column 0
    alpha: float
    min_change: float

    @property
    def regressions(self) -> list[tuple[int, Delta]]:
        return [(i, d) for (i, _), d in self.deltas.items() if d.verdict == "slower"]


def compare(columns: list[TargetReport], kind: str, alpha: float = ALPHA, min_change: float = MIN_CHANGE) -> Comparison:
    recipes = recipes_of(columns)
    base = columns[0]
    deltas = {}
    for i, col in enumerate(columns[1:], start=1):
        for recipe in recipes:
            deltas[(i, recipe)] = delta(recipe, base.row(recipe), col.row(recipe), alpha, min_change)
    return Comparison(kind, columns, recipes, deltas, alpha, min_change)


def _one_target(store: ResultsStore, targets: tuple[str, ...], run_ids: list[int]) -> str:
    if len(targets) > 1:
        raise UsageError("--run/--baseline compare one target over time, but several --target were given. "
                         "Fix: give one --target, or compare targets without --run")
    if targets:
        return targets[0]
    on = sorted({t for run_id in run_ids for t in run_targets(store, run_id)})
    if len(on) != 1:
        raise UsageError(f"runs {', '.join(map(str, run_ids))} measured on {', '.join(on)}. "
                         "Fix: add --target NAME")
    return on[0]


def columns(store: ResultsStore, targets: tuple[str, ...] = (), runs: tuple[int, ...] = (),
            baseline: int | None = None, model: str | None = None) -> tuple[str, list[TargetReport]]:
    """What `edgekit compare` compares: ("targets", latest run per target) or ("runs", runs on one target),
    the baseline (or first run) first."""
    if baseline is None and not runs:
        if len(targets) < 2:
            raise UsageError("nothing to compare. Fix: give two --target, two --run, or --baseline RUN")
        cols = [target_report(store, latest_run(store, t, model), t) for t in targets]
        models = sorted({c.model or "?" for c in cols})
        if len(models) > 1:
            raise UsageError(f"the latest runs on {', '.join(targets)} are of different models ({', '.join(models)}). "
                             "Fix: add --model NAME")
        return "targets", cols
    run_ids = ([baseline] if baseline is not None else []) + list(runs)
    target = _one_target(store, targets, run_ids)
    if baseline is not None and not runs:
        base = target_report(store, baseline, target)
        latest = latest_run(store, target, model or base.model)
        if latest == baseline:
            raise UsageError(f"run {baseline} is the latest run on {target}: nothing newer to compare with it. "
                             f"Fix: run `edgekit profile --target {target}` first, or add --run ID")
        run_ids.append(latest)
    if len(run_ids) < 2:
        raise UsageError("one run alone is nothing to compare. Fix: add a second --run, or --baseline RUN")
    for run_id in run_ids:
        if target not in run_targets(store, run_id):
            raise UsageError(f"run {run_id} did not measure on {target}. Fix: pick runs that did")
    return "runs", [target_report(store, run_id, target) for run_id in run_ids]
