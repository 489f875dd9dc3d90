"""Interleaved rounds: how a ranking's measuring time is split, and how the rounds add up again.

Variants measured one after the other each see different conditions (another load on the
device, a warmer chip, a governor that ramped up), so a difference between them may be the
device's, not the variants'. Measured in rounds A B C, B C A, C A B, every variant meets the
same conditions, none always runs first after an idle gap, and per-round ratios against a
baseline cancel what drifts between rounds (a paired design).

Pure: agent bench documents in, one bench document out. The merged document reads like one
agent document (same keys, statistics from the agent's own `summarize`), plus `rounds`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence, TypeVar

from .agent import cpuload
from .agent.stats import bootstrap_median_ci, noise_warning, percentile, summarize
from .settings import BenchSettings

T = TypeVar("T")

MIN_ROUND_RUNS = 10  # per round, unless the profile asks for fewer in all
MIN_ROUND_S = 0.1
RATIO_STATS = ("p50_ms", "p90_ms", "p99_ms")


def round_settings(settings: BenchSettings) -> BenchSettings:
    """One round's share: the same warmup (each round is a fresh process), the minimum count and
    duration divided by the rounds, never below a floor that still gives a stable round median."""
    n = settings.rounds
    if n <= 1:
        return settings
    min_runs = max(math.ceil(settings.min_runs / n), min(settings.min_runs, MIN_ROUND_RUNS))
    min_s = max(settings.min_s / n, min(settings.min_s, MIN_ROUND_S))
    return dataclasses.replace(settings, min_runs=min_runs, min_s=min_s,
                               max_s=max(settings.max_s / n, min_s, MIN_ROUND_S),
                               max_runs=max(math.ceil(settings.max_runs / n), min_runs))


def round_order(items: Sequence[T], index: int) -> list[T]:
    """Round `index` runs the items rotated by `index`: A B C, B C A, C A B, A B C, ..."""
    if not items:
        return []
    k = index % len(items)
    return list(items[k:]) + list(items[:k])


def _numbers(docs: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(d[key]) for d in docs if isinstance(d.get(key), (int, float)) and not isinstance(d.get(key), bool)]


def _max_memory(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each round is its own process: the variant's footprint is the largest any round had."""
    out: dict[str, Any] = {}
    for doc in docs:
        for key, value in doc.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = max(out.get(key, value), value)
            else:
                out.setdefault(key, value)
    return out


def _merge_power(docs: Sequence[dict[str, Any]], runs: Sequence[int]) -> dict[str, Any]:
    """Energy and time add up over the rounds; averages are taken over the whole measured time."""
    if not docs or not all(d.get("available") for d in docs):
        missing = next((d for d in docs if not d.get("available")), {})
        return dict(missing) if missing else {"available": False, "reason": "not measured"}
    out = dict(docs[0])
    energy = sum(_numbers(docs, "energy_j"))
    seconds = sum(_numbers(docs, "window_s"))
    total_runs = sum(runs)
    out.update(energy_j=energy, window_s=seconds, avg_w=energy / seconds if seconds else docs[0].get("avg_w"),
               peak_w=max(_numbers(docs, "peak_w") or [0.0]), samples=int(sum(_numbers(docs, "samples"))),
               idle_samples=int(sum(_numbers(docs, "idle_samples"))),
               energy_per_inference_mj=energy / total_runs * 1000.0 if total_runs else None)
    for key in ("idle_w", "energy_above_idle_per_inference_mj"):
        values = _numbers(docs, key)
        out[key] = sum(values) / len(values) if len(values) == len(docs) else None
    rails = [d.get("rails_avg_w") for d in docs]
    if all(isinstance(r, dict) for r in rails):
        names = set.intersection(*(set(r) for r in rails))
        out["rails_avg_w"] = {k: sum(r[k] for r in rails) / len(rails) for k in sorted(names)}
    out["notes"] = _union(d.get("notes") or [] for d in docs)
    return out


def _merge_rate(docs: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    if not docs or not all(isinstance(d, dict) for d in docs):
        return None
    calls = sum(int(d["calls"]) for d in docs)
    missed = sum(int(d["missed_deadlines"]) for d in docs)
    return {**docs[0], "calls": calls, "missed_deadlines": missed,
            "dropped_frames": sum(int(d["dropped_frames"]) for d in docs),
            "missed_fraction": missed / calls if calls else 0.0}


def _merge_load(docs: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The busiest round: a figure taken under load anywhere in the set is under suspicion."""
    loads = [d for d in docs if isinstance(d, dict)]
    if not loads:
        return None
    known = [d for d in loads if isinstance(d.get("other_cpu"), (int, float))]
    return dict(max(known, key=lambda d: d["other_cpu"])) if known else dict(loads[0])


def _union(lists) -> list[str]:
    out: list[str] = []
    for items in lists:
        for item in items:
            if item not in out:
                out.append(item)
    return out


@dataclasses.dataclass
class Round:
    """One agent bench process: which round, where in that round's order, when (host clock)."""

    index: int
    position: int
    started: float
    ended: float
    doc: dict[str, Any]


def merge(rounds: Sequence[Round]) -> dict[str, Any]:
    """A variant's rounds as one bench document: samples pooled and summarised again, cold start
    from the first round, memory the largest, power over the whole measured time, warnings united."""
    if not rounds:
        raise ValueError("no rounds to merge")
    docs = [r.doc for r in rounds]
    if len(docs) == 1:
        only = dict(docs[0])
        only["rounds"] = [_round_entry(rounds[0])]
        return only
    first, last = docs[0], docs[-1]
    samples = [float(x) for d in docs for x in d.get("samples_ms", [])]
    runs = [int((d.get("window") or {}).get("runs", len(d.get("samples_ms", [])))) for d in docs]
    latency = summarize(samples)
    load = _merge_load([d.get("load") for d in docs])
    merged = dict(first)
    merged.update(
        settings={**(first.get("settings") or {}), "rounds": len(docs)},
        window={"runs": sum(runs), "seconds": sum(float((d.get("window") or {}).get("seconds", 0.0)) for d in docs)},
        latency=latency,
        samples_ms=samples,
        rate=_merge_rate([d.get("rate") for d in docs]),
        memory=_max_memory([d.get("memory") or {} for d in docs]),
        power=_merge_power([d.get("power") or {} for d in docs], runs),
        load=load,
        warnings=_merged_warnings(docs, latency, load),
        rounds=[_round_entry(r) for r in rounds],
    )
    if "thermal" in first:
        merged["thermal"] = {**(first.get("thermal") or {}), "after": (last.get("thermal") or {}).get("after"),
                             "governors": (last.get("thermal") or {}).get("governors")}
    emulated = next((d["emulation"] for d in docs if (d.get("emulation") or {}).get("emulated")), None)
    if emulated is not None:
        merged["emulation"] = emulated
    return merged


def _merged_warnings(docs: Sequence[dict[str, Any]], latency: dict[str, Any],
                     load: dict[str, Any] | None) -> list[str]:
    """Every round's warnings once; the noise and load warnings are those of the merged figures
    (one line, not one per round with its own number)."""
    own = {w for d in docs for w in (noise_warning(d.get("latency") or {}), cpuload.warning(d.get("load") or {})) if w}
    kept = [w for w in _union(d.get("warnings") or [] for d in docs) if w not in own]
    return kept + [w for w in (noise_warning(latency), cpuload.warning(load or {})) if w]


def _round_entry(r: Round) -> dict[str, Any]:
    lat = r.doc.get("latency") or {}
    return {"round": r.index, "position": r.position, "started": r.started, "ended": r.ended,
            "n": lat.get("n"), **{k: lat.get(k) for k in RATIO_STATS},
            "peak_rss_mb": (r.doc.get("memory") or {}).get("peak_rss_mb"),
            "other_cpu": (r.doc.get("load") or {}).get("other_cpu")}


def paired_ratios(doc: dict[str, Any], baseline: dict[str, Any], baseline_recipe: str) -> dict[str, Any] | None:
    """Per-round ratios of `doc`'s latency statistics to the baseline's from the same round, with
    their median and a seeded bootstrap 95 % interval over the rounds. None without two shared rounds."""
    mine = {r["round"]: r for r in doc.get("rounds") or []}
    base = {r["round"]: r for r in baseline.get("rounds") or []}
    shared = sorted(set(mine) & set(base))
    if len(shared) < 2:
        return None
    stats: dict[str, Any] = {}
    for key in RATIO_STATS:
        ratios = [mine[i][key] / base[i][key] for i in shared
                  if isinstance(mine[i].get(key), (int, float)) and isinstance(base[i].get(key), (int, float))
                  and base[i][key] > 0]
        if len(ratios) == len(shared):
            lo, hi = bootstrap_median_ci(ratios)
            stats[key] = {"ratio": percentile(sorted(ratios), 50), "ci95": [lo, hi], "per_round": ratios}
    if "p50_ms" not in stats:
        return None
    return {"baseline": baseline_recipe, "rounds": len(shared), "ratio": stats["p50_ms"]["ratio"],
            "ci95": stats["p50_ms"]["ci95"], "stats": stats}
