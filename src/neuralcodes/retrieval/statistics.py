"""How sure a retrieval comparison is: paired bootstrap intervals over the same queries.

Two layers (or two models) scored on the same queries give paired per-query APs. Their mean
difference varies far less than either mAP does, because most of the spread in AP is between
queries (easy and hard classes), which pairing cancels. So the interval of the mean paired
difference, not the two mAPs' separate standard errors, says whether one layer retrieves better.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import numpy as np

DEFAULT_RESAMPLES = 10_000
DEFAULT_CONFIDENCE = 0.95


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile bootstrap interval of ``mean(a - b)``, resampling the pairs (queries) with replacement.

    Returns ``{"mean_difference", "low", "high", "confidence", "n_resamples", "n"}``; an interval
    that excludes 0 means these queries resolve the difference at that confidence. Seeded, so the
    same inputs give the same interval. (``scipy.stats.bootstrap(..., method="percentile")`` computes
    the same interval; scipy is not a dependency of the package, so numpy does it here.)
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"a and b must be 1-D and paired (one value per query each), got shapes {a.shape} and {b.shape}"
        )
    if len(a) < 2:
        raise ValueError(f"a paired bootstrap needs at least 2 pairs, got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must be finite (per-query APs)")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 100:
        raise ValueError(
            f"n_resamples must be at least 100 for a stable interval, got {n_resamples}"
        )
    # Resampling the paired differences is resampling the queries: each keeps both of its scores.
    difference = a - b
    n = len(difference)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    step = max(1, (1 << 22) // n)  # resamples per batch: memory stays near 2**22 indices
    for start in range(0, n_resamples, step):
        stop = min(start + step, n_resamples)
        means[start:stop] = difference[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = (float(v) for v in np.quantile(means, [tail, 1 - tail]))
    return {
        "mean_difference": float(difference.mean()),
        "low": low,
        "high": high,
        "confidence": confidence,
        "n_resamples": n_resamples,
        "n": len(difference),
    }


def paired_comparisons(per_query: Mapping[str, np.ndarray], **kwargs) -> list[dict]:
    """:func:`paired_bootstrap` for every pair of entries (``a`` listed first, as in ``per_query``)."""
    return [
        {"a": a, "b": b, **paired_bootstrap(per_query[a], per_query[b], **kwargs)}
        for a, b in combinations(per_query, 2)
    ]
