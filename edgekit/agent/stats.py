"""Latency statistics. Pure functions over a list of samples (milliseconds)."""

from __future__ import annotations

import math
import random
from typing import Dict, List, Optional, Sequence, Tuple

NOISY_CV = 0.10  # above this coefficient of variation the figures are flagged as noisy


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on pre-sorted data."""
    n = len(sorted_samples)
    if n == 0:
        raise ValueError("no samples")
    pos = (n - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (pos - lo)


def bootstrap_median_ci(samples: Sequence[float], resamples: int = 1000, seed: int = 0,
                        level: float = 0.95) -> Tuple[float, float]:
    """Percentile bootstrap CI of the median; seeded so the same samples give the same interval."""
    n = len(samples)
    if n < 2:
        return (samples[0], samples[0]) if n else (float("nan"), float("nan"))
    try:
        import numpy as np

        rng = np.random.default_rng(seed)
        data = np.asarray(samples, dtype=float)
        medians = []
        chunk = max(1, 2_000_000 // n)  # bound memory: chunk x n indices at a time
        done = 0
        while done < resamples:
            k = min(chunk, resamples - done)
            medians.append(np.median(data[rng.integers(0, n, size=(k, n))], axis=1))
            done += k
        meds = np.sort(np.concatenate(medians)).tolist()
    except ImportError:
        rng_py = random.Random(seed)
        meds = sorted(_median([samples[rng_py.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    alpha = (1.0 - level) / 2.0 * 100.0
    return percentile(meds, alpha), percentile(meds, 100.0 - alpha)


def _median(values: List[float]) -> float:
    return percentile(sorted(values), 50.0)


def summarize(samples: Sequence[float]) -> Dict[str, object]:
    """p50/p90/p95/p99, mean, std (sample), CV, min, max and the median's 95 % CI."""
    s = sorted(samples)
    n = len(s)
    mean = sum(s) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in s) / (n - 1)) if n > 1 else 0.0
    lo, hi = bootstrap_median_ci(samples)
    return {
        "n": n,
        "p50_ms": percentile(s, 50),
        "p90_ms": percentile(s, 90),
        "p95_ms": percentile(s, 95),
        "p99_ms": percentile(s, 99),
        "mean_ms": mean,
        "std_ms": std,
        "cv": std / mean if mean > 0 else 0.0,
        "min_ms": s[0],
        "max_ms": s[-1],
        "ci95_median_ms": [lo, hi],
    }


def noise_warning(stats: Dict[str, object]) -> Optional[str]:
    """The warning a bench document carries for noisy samples (a summary from `summarize`)."""
    cv = stats.get("cv")
    if not isinstance(cv, (int, float)) or cv <= NOISY_CV:
        return None
    return "latency CV is {:.0%}: the device was busy or throttling; numbers are noisy".format(cv)
