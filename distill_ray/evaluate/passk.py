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
    """Mean pass@k over problems with a 95% normal-approximation interval; counts maps task -> (n, c)."""
    summary = {"problems": len(counts), "samples": sum(n for n, _ in counts.values()),
               "correct": sum(c for _, c in counts.values())}
    for k in ks:
        values = [pass_at_k(n, c, k) for n, c in counts.values() if n >= k]
        mean = float(np.mean(values)) if values else 0.0
        half = 1.96 * float(np.std(values, ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else 0.0
        summary[f"pass@{k}"] = {"mean": mean, "ci95": [max(0.0, mean - half), min(1.0, mean + half)]}
    return summary
