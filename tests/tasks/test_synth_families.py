"""Every procedural family, through the real sandboxed Verifier: its own solution passes, a wrong answer fails."""

from __future__ import annotations

from typing import List

import pytest

from distill_ray.tasks import DIFFICULTIES, FAMILIES, generate_puzzle, list_families
from distill_ray.verify import Check, SandboxLimits, Verifier
from tests.tasks.test_tasks import wrong_answer

SEEDS = (0, 1, 2)


def wrong_literal(sol: str):
    """A nearby wrong answer, as a literal: sol's own value (our trusted code, run here) nudged."""
    namespace = {"List": List}
    exec(sol, namespace)
    return wrong_answer(namespace["sol"]())


@pytest.fixture(scope="module")
def verifier():
    with Verifier(SandboxLimits(timeout_s=5.0), workers=2) as v:
        yield v


def test_at_least_30_families_over_seven_topics():
    assert len(list_families()) >= 30
    assert {f.topic for f in FAMILIES.values()} == {"arithmetic", "number_theory", "strings", "lists",
                                                   "combinatorics", "geometry", "games"}


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted_sat", "trusted_sat"])
def test_every_family_verifies_its_solution_and_rejects_a_wrong_answer(verifier, trusted):
    puzzles = [generate_puzzle(f, s, d) for f in list_families() for d in DIFFICULTIES for s in SEEDS]
    right = [Check("p3", p.sol, sat=p.sat, ans_type=p.ans_type, trusted_sat=trusted) for p in puzzles]
    wrong = [Check("p3", f"def sol():\n    return {wrong_literal(p.sol)!r}", sat=p.sat, ans_type=p.ans_type,
                   trusted_sat=trusted) for p in puzzles]
    verdicts = verifier.verify(right + wrong)
    for p, v in zip(puzzles, verdicts[:len(puzzles)]):
        assert v.passed, (p.task_id, v.status, v.detail, p.sat, p.sol)
    for p, v in zip(puzzles, verdicts[len(puzzles):]):
        assert not v.passed and v.status == "fail", (p.task_id, v.status, v.detail, p.sat)
