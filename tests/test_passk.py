from math import comb

import pytest

from distill_ray.evaluate import pass_at_k, summarize_passk


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
