import math
from math import comb

import numpy as np

import pytest

from distill_ray.evaluate import pass_at_k, summarize_passk
from distill_ray.markdown import interval


@pytest.mark.parametrize("n,c,k", [(10, 3, 1), (10, 3, 5), (20, 1, 10), (5, 2, 4), (8, 7, 2)])
def test_matches_the_binomial_formula(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_hand_computed_values():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6


def test_edges():
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)  # k > n
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)  # c > n


def test_summary_means_and_interval():
    s = summarize_passk({"a": (4, 4), "b": (4, 0), "c": (4, 2)}, [1, 4])
    assert s["pass@1"]["mean"] == pytest.approx(0.5)
    assert s["pass@4"]["mean"] == pytest.approx(2 / 3)
    low, high = s["pass@1"]["ci95"]
    assert 0 <= low < 0.5 < high <= 1
    assert (s["problems"], s["samples"], s["correct"]) == (3, 12, 6)
    assert (s["pass@1"]["problems"], s["pass@1"]["dropped_n_lt_k"]) == (3, 0)


def test_bootstrap_by_hand():
    # Two problems scoring 0 and 1: a resample's mean is 0 or 1 with probability 1/4 each, so the 2.5th and
    # 97.5th percentiles of 2,000 resamples are 0 and 1.
    assert summarize_passk({"a": (4, 0), "b": (4, 4)}, [1])["pass@1"]["ci95"] == [0.0, 1.0]


def test_single_problem_gives_the_wilson_interval():
    # Wilson 95% for 3 of 10: the textbook [0.108, 0.603]; the old normal interval was [0.3, 0.3].
    low, high = summarize_passk({"a": (10, 3)}, [1])["pass@1"]["ci95"]
    assert (low, high) == (pytest.approx(0.1078, abs=1e-4), pytest.approx(0.6032, abs=1e-4))


def test_all_zero_scores_have_a_positive_upper_bound():
    s = summarize_passk({f"t{i}": (10, 0) for i in range(24)}, [1, 5])
    z2 = 1.96**2
    assert s["pass@1"]["mean"] == 0.0 and s["pass@1"]["ci95"] == [0.0, pytest.approx(z2 / (240 + z2))]
    assert s["pass@5"]["ci95"] == [0.0, pytest.approx(1 - (1 - z2 / (240 + z2)) ** 5)]


def test_a_rare_success_gets_a_nonzero_upper_bound():
    counts = {f"t{i}": (10, 0) for i in range(23)} | {"hit": (10, 6)}  # pass@1 mean 0.6 / 24 = 0.025
    low, high = summarize_passk(counts, [1])["pass@1"]["ci95"]
    assert low == 0.0 and 0.025 < high < 0.2


def test_interval_contains_the_mean():
    rng = np.random.default_rng(1)
    for _ in range(20):
        counts = {f"t{i}": (n, int(rng.integers(0, n + 1))) for i, n in enumerate(rng.integers(1, 16, size=15))}
        for k in (1, 3, 10):
            entry = summarize_passk(counts, [k])[f"pass@{k}"]
            assert entry["problems"] == 0 or entry["ci95"][0] <= entry["mean"] <= entry["ci95"][1]


def test_same_counts_same_interval_whatever_the_order():
    counts = {f"t{i}": (8, i % 9) for i in range(30)}
    first = summarize_passk(counts, [1, 4])
    assert summarize_passk(dict(reversed(counts.items())), [1, 4]) == first


def test_problems_with_fewer_than_k_samples_are_counted_not_averaged():
    s = summarize_passk({"a": (4, 4), "b": (2, 0), "c": (4, 0)}, [1, 3])
    assert s["pass@1"] | {"ci95": None} == {"mean": pytest.approx(1 / 3), "ci95": None, "problems": 3,
                                               "dropped_n_lt_k": 0}
    assert s["pass@3"]["mean"] == pytest.approx(0.5)  # b (n=2) left out, not scored 0
    assert (s["pass@3"]["problems"], s["pass@3"]["dropped_n_lt_k"]) == (2, 1)


def test_every_problem_with_fewer_than_k_samples():
    entry = summarize_passk({"a": (2, 1), "b": (3, 0)}, [5])["pass@5"]
    assert math.isnan(entry["mean"]) and (entry["problems"], entry["dropped_n_lt_k"]) == (0, 2)
    assert interval(entry) == "n/a (every problem has n < k)"
