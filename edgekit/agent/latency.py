"""Warmup until latency is steady, then the measured loop: as fast as possible, or at a fixed rate.

`call()` runs one inference and returns its latency in milliseconds. Warmup runs in windows and
stops once the median of the last window is within `tolerance` of the previous one (after at
least `min_s`), or at `max_s`. A fixed rate schedules calls as a camera would deliver frames.
"""

from __future__ import annotations

import time
from typing import Callable, List


def _median(values: List[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def warm_up(call: Callable[[], float], min_s: float, max_s: float, first_ms: float,
            tolerance: float = 0.05) -> dict:
    """Run until two consecutive window medians agree within `tolerance`, bounded by [min_s, max_s]."""
    size = 10 if first_ms < 50 else 3  # slow models: short windows, or warmup alone takes minutes
    medians: List[float] = []
    runs, steady, start = 0, False, time.perf_counter()
    while True:
        medians.append(_median([call() for _ in range(size)]))
        runs += size
        elapsed = time.perf_counter() - start
        if len(medians) >= 2 and abs(medians[-1] - medians[-2]) <= tolerance * medians[-2] and elapsed >= min_s:
            steady = True
            break
        if elapsed >= max_s:
            break
    return {"runs": runs, "seconds": time.perf_counter() - start, "steady": steady, "window": size,
            "tolerance": tolerance, "medians_ms": medians[-5:]}


def measure(infer: Callable[[], object], min_runs: int, min_s: float, max_s: float, max_runs: int) -> List[float]:
    """Back-to-back calls of `infer` (one inference, untimed) until both min_runs and min_s are met
    (or max_s / max_runs is hit). Timed inline: no extra Python frame between the clock and the call."""
    samples: List[float] = []
    append = samples.append
    clock = time.perf_counter
    start = clock()
    while True:
        t0 = clock()
        infer()
        t1 = clock()
        append((t1 - t0) * 1000.0)
        elapsed = t1 - start
        if (len(samples) >= min_runs and elapsed >= min_s) or elapsed >= max_s or len(samples) >= max_runs:
            return samples


def measure_at_rate(call: Callable[[], float], rate_hz: float, min_runs: int, min_s: float, max_s: float,
                    max_runs: int) -> tuple:
    """Calls scheduled every 1/rate_hz s. A call that ends after its deadline (the next frame's
    arrival) is a missed deadline; frames that arrive while a call runs are dropped, as a camera
    pipeline that keeps only the newest frame would."""
    period = 1.0 / rate_hz
    samples: List[float] = []
    missed = dropped = 0
    start = time.perf_counter()
    due = start
    while True:
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        samples.append(call())
        end = time.perf_counter()
        due += period
        if end > due:
            missed += 1
            while due < end:
                due += period
                dropped += 1
        elapsed = end - start
        if (len(samples) >= min_runs and elapsed >= min_s) or elapsed >= max_s or len(samples) >= max_runs:
            break
    return samples, {"rate_hz": rate_hz, "period_ms": period * 1000.0, "calls": len(samples),
                     "missed_deadlines": missed, "dropped_frames": dropped,
                     "missed_fraction": missed / len(samples)}
