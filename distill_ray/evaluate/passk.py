"""pass@k with the unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k)."""

from __future__ import annotations

import math

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) passes."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    # The product form avoids huge binomials: C(n-c,k)/C(n,k) = prod_{i=n-c+1}^{n} (1 - k/i).
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def summarize_passk(counts: dict[str, tuple[int, int]], ks: list[int]) -> dict:
    """Mean pass@k over problems with a 95% interval; counts maps task -> (n, c).

    The interval is a seeded percentile bootstrap over problems (resampled with replacement), so the same counts
    always give the same interval. A bootstrap collapses to one point when every problem has the same score (all 0,
    all 1, or a single problem); then the interval is the Wilson score interval of the per-sample pass rate on the
    pooled samples (c correct of N), mapped to pass@k by 1 - (1 - p)^k, which is never [0, 0] with N > 0.
    Problems with n < k have no unbiased pass@k: they are left out of that k's mean and counted in
    ``dropped_n_lt_k``; if every problem has n < k, the mean and interval are NaN.
    """
    summary = {"problems": len(counts), "samples": sum(n for n, _ in counts.values()),
               "correct": sum(c for _, c in counts.values())}
    for k in ks:
        kept = [(n, c) for n, c in counts.values() if n >= k]
        entry = {"mean": math.nan, "ci95": [math.nan, math.nan]}
        if kept:
            # Sorted so the interval depends on the counts only, not on the order of the tasks.
            scores = np.array(sorted(pass_at_k(n, c, k) for n, c in kept))
            mean = float(scores.mean())
            if scores[0] == scores[-1]:
                lo, hi = wilson_passk(sum(n for n, _ in kept), sum(c for _, c in kept), k)
            else:
                lo, hi = bootstrap_interval(scores)
            # The with-replacement mapping can sit just below an unbiased estimate (e.g. n == k, c >= 1).
            entry = {"mean": mean, "ci95": [min(lo, mean), max(hi, mean)]}
        summary[f"pass@{k}"] = entry | {"problems": len(kept), "dropped_n_lt_k": len(counts) - len(kept)}
    return summary


def bootstrap_interval(scores: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``scores``, resampling them with replacement."""
    rng = np.random.default_rng(seed)
    means = scores[rng.integers(0, len(scores), size=(resamples, len(scores)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def wilson_passk(samples: int, correct: int, k: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval of the per-sample pass rate (correct of samples), mapped to pass@k = 1 - (1 - p)^k."""
    p = correct / samples
    centre = (p + z * z / (2 * samples)) / (1 + z * z / samples)
    half = z * math.sqrt(p * (1 - p) / samples + z * z / (4 * samples * samples)) / (1 + z * z / samples)
    return tuple(1.0 - (1.0 - max(0.0, min(1.0, x))) ** k for x in (centre - half, centre + half))
