import numpy as np
import pytest

from edgekit.agent.stats import bootstrap_median_ci, percentile, summarize


@pytest.mark.parametrize("q", [0, 10, 50, 90, 95, 99, 100])
def test_percentile_matches_numpy(q):
    data = sorted(np.random.default_rng(1).lognormal(size=257).tolist())
    assert percentile(data, q) == pytest.approx(np.percentile(data, q))


def test_summary_figures_match_numpy():
    data = np.random.default_rng(2).gamma(2.0, 1.5, size=1000)
    s = summarize(data.tolist())
    assert s["n"] == 1000
    assert s["p50_ms"] == pytest.approx(np.median(data))
    assert s["p99_ms"] == pytest.approx(np.percentile(data, 99))
    assert s["mean_ms"] == pytest.approx(data.mean())
    assert s["std_ms"] == pytest.approx(data.std(ddof=1))
    assert s["cv"] == pytest.approx(data.std(ddof=1) / data.mean())
    assert (s["min_ms"], s["max_ms"]) == (pytest.approx(data.min()), pytest.approx(data.max()))


def test_bootstrap_ci_brackets_the_median_and_is_repeatable():
    data = np.random.default_rng(3).normal(10, 1, size=400).tolist()
    lo, hi = bootstrap_median_ci(data)
    assert lo < np.median(data) < hi
    assert hi - lo < 0.5  # 400 samples of sd 1: the median is known to within a few tenths
    assert bootstrap_median_ci(data) == (lo, hi)


def test_single_sample_has_zero_spread():
    s = summarize([2.5])
    assert s["std_ms"] == 0 and s["ci95_median_ms"] == [2.5, 2.5]
