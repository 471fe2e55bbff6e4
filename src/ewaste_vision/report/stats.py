"""Confidence intervals for metrics computed on a finite test set."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np


def _two_sided_z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion such as accuracy.

    Wilson rather than the textbook normal ("Wald") interval because e-waste test sets are often
    a few dozen images: the Wald interval then collapses to zero width at 0% or 100% and its
    coverage falls well below the nominal level, while Wilson stays inside [0, 1] and keeps close
    to nominal coverage even for n around 10.

    Args:
        successes: number of correct predictions, 0 <= successes <= total.
        total: number of trials (test images).
        confidence: two-sided confidence level, e.g. 0.95.

    Returns:
        (low, high) as fractions in [0, 1]. With `total == 0` nothing is known and the interval
        is (0.0, 1.0).

    Raises:
        ValueError: if the counts are negative, `successes > total`, or `confidence` is not in (0, 1).
    """
    if total < 0 or successes < 0 or successes > total:
        raise ValueError(f"need 0 <= successes <= total, got successes={successes}, total={total}")
    z = _two_sided_z(confidence)
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    z2_n = z * z / total
    centre = (p + z2_n / 2.0) / (1.0 + z2_n)
    half_width = z / (1.0 + z2_n) * math.sqrt(p * (1.0 - p) / total + z2_n / (4.0 * total))
    # At 0/n and n/n the bounds are exactly 0 and 1 in theory; pin them so rounding cannot give
    # a lower bound of 1e-17 in a report, and clamp elsewhere for the same reason.
    low = 0.0 if successes == 0 else max(0.0, centre - half_width)
    high = 1.0 if successes == total else min(1.0, centre + half_width)
    return low, high


def bootstrap_interval(
    values: Sequence[Any] | np.ndarray,
    statistic: Callable[[np.ndarray], float],
    n: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval for any statistic of per-sample values.

    For metrics with no closed-form interval (macro-F1, mAP): resample the test samples with
    replacement `n` times and take the percentiles of the statistic. The fixed seed makes reports
    reproducible run to run.

    Args:
        values: one entry per test sample (rows of a 2-D array are samples), e.g. stacked
            (label, prediction) pairs.
        statistic: maps a resampled array (same shape as `values`) to a number.
        n: number of bootstrap resamples.
        seed: seed for the resampling generator.
        confidence: two-sided confidence level.

    Returns:
        (low, high) percentiles of the bootstrap distribution.

    Raises:
        ValueError: if `values` is empty, `n < 1`, or `confidence` is not in (0, 1).
    """
    _two_sided_z(confidence)  # validates the level
    data = np.asarray(values)
    if data.shape[0] == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, data.shape[0], size=(n, data.shape[0]))  # [n, N]
    estimates = np.array([statistic(data[row]) for row in indices], dtype=float)  # [n]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(estimates, [tail, 1.0 - tail])
    return float(low), float(high)
