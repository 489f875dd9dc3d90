"""The CI gate: the variant a run chose on a target, held to limits and to a baseline run.

The subject is the chosen variant because that is what `deploy` would install; a run where the
profile chose nothing fails the gate outright.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import fmt
from .compare import ALPHA, MIN_CHANGE, delta
from .data import TargetReport


@dataclass
class Check:
    name: str
    ok: bool
    message: str


def run_checks(t: TargetReport, max_p90_ms: float | None = None, max_accuracy_drop: float | None = None,
               baseline: TargetReport | None = None, alpha: float = ALPHA,
               min_change: float = MIN_CHANGE) -> list[Check]:
    chosen = t.chosen
    where = f"on {t.target}, run {t.run_id}"
    if t.unfinished and chosen is not None:  # an interrupted run's choice was never acted on
        return [Check("selection", False, f"{t.unfinished}: its choice {chosen.variant.recipe} is not a result. "
                                          f"Fix: run it again to completion, or check an earlier run with --run")]
    if chosen is None:
        reasons = "; ".join(f"{r.variant.recipe}: {r.reason}" for r in t.rows) or "no variants"
        return [Check("selection", False, f"no variant meets profile {t.profile} {where} ({reasons})"
                                          + (f"; {t.unfinished}" if t.unfinished else ""))]
    recipe = chosen.variant.recipe
    checks = [Check("selection", True, f"{recipe} chosen {where}")]
    if max_p90_ms is not None:
        p90 = chosen.stat("p90_ms")
        ok = p90 is not None and p90 <= max_p90_ms
        checks.append(Check("max-p90-ms", ok, f"{recipe} p90 {fmt.ms(p90)} ms {'<=' if ok else '>'} "
                                              f"{max_p90_ms:g} ms {where}"))
    if max_accuracy_drop is not None:
        drop = chosen.accuracy_drop
        if drop is None:
            checks.append(Check("max-accuracy-drop", False, f"{recipe} has no accuracy figures {where} "
                                                            "(add [data] evaluation to the model spec)"))
        else:
            ok = drop <= max_accuracy_drop + 1e-12
            checks.append(Check("max-accuracy-drop", ok, f"{recipe} accuracy drop {fmt.pct(drop)} pts "
                                                         f"{'<=' if ok else '>'} {fmt.pct(max_accuracy_drop)} {where}"))
    if baseline is not None:
        d = delta(recipe, baseline.row(recipe), chosen, alpha, min_change)
        base = f"baseline run {baseline.run_id}"
        if d.change is None:
            checks.append(Check("baseline", False, f"{recipe} was not measured in {base} on {baseline.target}: "
                                                   "nothing to compare. Fix: pick a baseline that measured it"))
        else:
            p = "" if d.p_value is None else f", Mann-Whitney p={d.p_value:.2g}"
            figures = (f"{recipe} median {fmt.ms(chosen.stat('p50_ms'))} ms vs {fmt.ms(d.base.stat('p50_ms'))} ms "
                       f"in {base} ({fmt.signed_pct(d.change)}{p}, CIs "
                       f"{'overlap' if d.ci_overlap else 'apart'})")
            if d.verdict == "slower":
                checks.append(Check("baseline", False, f"significant regression: {figures}"))
            else:
                checks.append(Check("baseline", True, f"{'significantly faster' if d.verdict == 'faster' else 'no significant change'}: {figures}"))
    return checks
