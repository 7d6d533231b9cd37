"""The verify stage's rows -> checks -> verdict columns, with repeats of a check run once."""

import pandas as pd

from distill_ray.stages.verify import judge_rows
from distill_ray.verify import SandboxLimits, Verifier

SAT = "def sat(x: int) -> bool:\n    return x * 3 == 21"
RIGHT, WRONG = "def sol():\n    return 7", "def sol():\n    return 8"


def rows(programs: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"program": programs, "kind": "p3", "sat": SAT, "ans_type": "int", "expected": None,
                         "tests": "", "entry_point": "", "source": "puzzles"})


class Counting:
    """A real verifier that remembers what it was asked to run."""

    def __init__(self, verifier):
        self.verifier, self.asked = verifier, []

    def verify(self, checks):
        self.asked.append(list(checks))
        return self.verifier.verify(checks)


def test_a_repeated_check_runs_once_and_every_row_gets_its_verdict():
    programs = [RIGHT, RIGHT, WRONG, RIGHT, WRONG, "def sol(:"]
    with Verifier(SandboxLimits(timeout_s=10), workers=1) as verifier:
        counting = Counting(verifier)
        deduped = judge_rows(counting, rows(programs))
        every = judge_rows(verifier, rows(programs), dedupe=False)

    assert [c.program for c in counting.asked[0]] == [RIGHT, WRONG, "def sol(:"]   # distinct, in order
    assert deduped["passed"].tolist() == [True, True, False, True, False, False]
    for column in ("passed", "status", "answer"):
        assert deduped[column].tolist() == every[column].tolist(), column
    # Only the first of each is charged the check's time: the repeats cost nothing.
    seconds = deduped["verify_seconds"].tolist()
    assert all(seconds[i] > 0 for i in (0, 2, 5)) and all(seconds[i] == 0 for i in (1, 3, 4))
