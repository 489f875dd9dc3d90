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

from .data import TargetReport, VariantRow

ALPHA = 0.01
MIN_CHANGE = 0.05


def mann_whitney_u(a: list[float], b: list[float]) -> tuple[float, float]:
    """U statistic of `a` and the two-sided p-value: normal approximation with tie and continuity
    corrections (scipy.stats.mannwhitneyu(method="asymptotic") gives the same numbers)."""
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
