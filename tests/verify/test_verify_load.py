"""Verdicts under load (issue 20): timeout_s is CPU time (distill_ray/verify/budget.py), so a program that needs
0.7 s of wall time and almost no CPU passes with a 1 s budget however busy the machine is, while a program that
spins or sleeps forever still ends, as a timeout, within the wall-clock cap. The machine is loaded here by CPU
burners of the test's own (more than there are cores), on both paths: the C helper and the pure-Python one.

No timing is asserted but generous bounds that say a candidate was stopped at all."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from distill_ray.verify import Check, SandboxLimits, Verifier
from distill_ray.verify.budget import wall_cap

SLEEP = "import time\ndef solution():\n    time.sleep(0.7)\n    return 7\n"
SPIN = "def solution():\n    while True:\n        pass\n"
SLEEP_FOREVER = "import time\ndef solution():\n    time.sleep(100)\n    return 7\n"
SAT7 = "def sat(x: int):\n    return x == 7\n"


def _as(kind: str, program: str, timeout_s: float = 1.0) -> Check:
    """The program (which defines solution()) as a check of this kind, with a 1 s budget by default."""
    if kind == "gsm8k":
        return Check("gsm8k", program, expected=7, timeout_s=timeout_s)
    if kind == "asserts":
        return Check("asserts", program, tests="assert solution() == 7\n", timeout_s=timeout_s)
    return Check("p3", program + "sol = solution\n", sat=SAT7, ans_type="int", trusted_sat=kind == "trusted",
                 timeout_s=timeout_s)


@pytest.fixture
def loaded():
    """Twice as many busy loops as cores (at least 4), killed and reaped at the end."""
    n = max(4, 2 * (os.cpu_count() or 1))
    burners = [subprocess.Popen([sys.executable, "-S", "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield burners
    finally:
        for p in burners:
            p.kill()
            p.wait()


def test_sleep_passes_and_loops_time_out_on_a_loaded_machine(loaded, mode):
    kinds = ["gsm8k", "trusted", "untrusted", "asserts"]
    sleepers = [_as(kinds[i % 4], SLEEP) for i in range(10)]
    endless = [_as("gsm8k", SPIN), _as("gsm8k", SLEEP_FOREVER), _as("untrusted", SLEEP_FOREVER),
               _as("trusted", SPIN), _as("asserts", SPIN), _as("asserts", SLEEP_FOREVER)]
    with Verifier(SandboxLimits(timeout_s=1), workers=2) as v:
        assert all(p.poll() is None for p in loaded)   # still burning
        out = v.verify(sleepers + endless)
    assert [x.status for x in out[:10]] == ["pass"] * 10, [x for x in out[:10] if not x.passed]
    assert [x.status for x in out[10:]] == ["timeout"] * len(endless), out[10:]
    for check, x in zip(endless, out[10:]):   # stopped at all: within a bound far above the 4 s wall-clock cap
        assert x.seconds < 10 * wall_cap(1), x
        if "sleep" in check.program:   # a sleeper uses no CPU: the wall-clock cap ended it (a spinner: either)
            assert "wall clock" in x.detail, x


def test_sleeping_candidates_pass_repeatedly_under_load(loaded):
    """The issue's held-out check, ten times: a 0.7 s sleep with a 1 s budget, one worker, one check at a time."""
    with Verifier(SandboxLimits(timeout_s=1), workers=1) as v:
        for _ in range(10):
            verdict = v.verify([_as("gsm8k", SLEEP)])[0]
            assert verdict.passed, verdict


def test_forked_spinners_count_against_the_budget():
    """A candidate cannot get more CPU time by forking: what its children (and their orphans) use counts. Here
    the candidate sleeps (no CPU of its own) while four orphaned grandchildren spin; it ends as a timeout of its
    CPU budget (the detail says which limit), not of the wall-clock cap."""
    program = ("import os, time\ndef solution():\n"
               "    for _ in range(4):\n"
               "        if os.fork() == 0:\n"
               "            if os.fork() == 0:\n"       # an orphan: reparented to the zygote, still counted
               "                while True:\n                    pass\n"
               "            os._exit(0)\n"
               "    time.sleep(100)\n    return 7\n")
    # A small budget, so four spinners reach it well before the wall-clock cap even when they get a sliver of
    # a core each (load 28 on 2 cores here: 1 s of CPU took the whole 4 s cap).
    with Verifier(SandboxLimits(max_processes=10), workers=1) as v:
        out = v.verify([_as("gsm8k", program, 0.25), _as("untrusted", program, 0.25),
                        _as("gsm8k", "def solution():\n    return 7\n", 0.25)])
    assert [x.status for x in out] == ["timeout", "timeout", "pass"], out
    assert all("CPU time" in x.detail for x in out[:2]), out   # the orphans' CPU ended it, not the wall-clock cap
