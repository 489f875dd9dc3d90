"""The latency protocol's loops, driven by calls whose latencies the test decides."""

from __future__ import annotations

import itertools
import time

from edgekit.agent.latency import measure, measure_at_rate, warm_up


def test_warmup_stops_once_window_medians_agree():
    latencies = itertools.chain([40.0] * 10, [20.0] * 10, [10.0] * 10, itertools.repeat(5.0))
    warm = warm_up(lambda: next(latencies), min_s=0.0, max_s=60.0, first_ms=40.0)
    assert warm["steady"] and warm["window"] == 10
    assert warm["runs"] == 50  # window medians 40, 20, 10, 5, 5: steady at the fifth
    assert warm["medians_ms"][-2:] == [5.0, 5.0]


def test_warmup_is_bounded_when_latency_never_settles():
    flip = itertools.cycle([1.0] * 10 + [2.0] * 10)
    warm = warm_up(lambda: next(flip), min_s=0.0, max_s=0.05, first_ms=1.0)
    assert warm["steady"] is False and warm["seconds"] >= 0.05


def test_warmup_honours_its_minimum_duration():
    warm = warm_up(lambda: 1.0, min_s=0.05, max_s=60.0, first_ms=100.0)
    assert warm["steady"] and warm["seconds"] >= 0.05 and warm["window"] == 3


def test_measure_meets_both_minimums():
    samples = measure(lambda: 1.0, min_runs=30, min_s=0.0, max_s=60, max_runs=10**6)
    assert len(samples) == 30
    start = time.perf_counter()
    samples = measure(lambda: 1.0, min_runs=1, min_s=0.05, max_s=60, max_runs=10**6)
    assert time.perf_counter() - start >= 0.05 and len(samples) > 1


def _sleeping(ms):
    def call():
        start = time.perf_counter()
        time.sleep(ms / 1000)
        return (time.perf_counter() - start) * 1000
    return call


def test_fixed_rate_spaces_calls_and_counts_overruns():
    start = time.perf_counter()
    samples, rate = measure_at_rate(_sleeping(1), rate_hz=50, min_runs=5, min_s=0, max_s=60, max_runs=5)
    assert len(samples) == 5 and time.perf_counter() - start >= 4 / 50  # calls wait for their slot
    samples, rate = measure_at_rate(_sleeping(25), rate_hz=100, min_runs=6, min_s=0, max_s=60, max_runs=6)
    assert rate["missed_deadlines"] == 6 and rate["dropped_frames"] >= 6 * 2 and rate["missed_fraction"] == 1.0
