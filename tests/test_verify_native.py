"""The optional C fork loop (distill_ray/verify/native.py) and its pure-Python fallback give the same verdicts."""

from __future__ import annotations

import shutil

import pytest

from distill_ray.verify import Check, SandboxLimits, Verifier
from distill_ray.verify import pool
from distill_ray.verify.sandbox import _dup_order

RANDOM = "import random\ndef solution():\n    return random.random()\n"
SAT = "def sat(x: int):\n    return x == 3\n"


def _checks() -> list[Check]:
    return [Check("gsm8k", "def solution():\n    return 6 * 7\n", expected=42),
            Check("p3", "def sol():\n    return 3\n", sat=SAT, trusted_sat=True),
            Check("p3", "def sol():\n    return 3\n", sat=SAT),                      # untrusted: a fresh judge
            Check("p3", "def sol():\n    return 4\n", sat=SAT),
            Check("p3", "def sol():\n    return 3\n", sat="def sat(x: int):\n    while True:\n        pass\n",
                  timeout_s=0.3),
            Check("gsm8k", "import os\ndef solution():\n    os._exit(0)\n", expected=1),
            Check("gsm8k", "def solution():\n    while True:\n        pass\n", expected=1, timeout_s=0.3)]


WANT = ["pass", "pass", "pass", "fail", "timeout", "error", "timeout"]


@pytest.fixture(params=["python", "native"])
def mode(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setenv("DISTILL_RAY_VERIFY_NATIVE", "0")
    elif not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler: only the pure-Python path exists here")
    else:
        monkeypatch.delenv("DISTILL_RAY_VERIFY_NATIVE", raising=False)   # a run of the suite with it set to 0
    monkeypatch.setattr(pool, "_NATIVE", [])   # build (or not) again under this setting
    return request.param


def test_same_verdicts_and_own_random_streams(mode):
    with Verifier(SandboxLimits(timeout_s=3), workers=1) as v:
        assert v.protections["native_fork"].startswith("on" if mode == "native" else "off"), v.protections
        assert [x.status for x in v.verify(_checks())] == WANT
        answers = [x.answer for x in v.verify([Check("gsm8k", RANDOM, expected=2)] * 6)]
    assert len(set(answers)) == 6, answers   # each candidate of a batch has its own random stream


def test_dup_order_never_overwrites_a_source_still_to_be_read():
    assert _dup_order({3: 7, 1: 9, 2: 9, 0: 3}) == [(1, 9), (2, 9), (0, 3), (3, 7)]
    assert _dup_order({3: 4, 4: 3}) is None   # a cycle: the child dups first
    for fds in ({3: 7, 1: 9, 2: 9, 0: 3}, {4: 3, 3: 10, 0: 12}, {1: 2, 2: 5, 0: 1}):
        order, done = _dup_order(fds), set()
        for target, src in order:
            assert src not in done or src == target   # sources are read before anything is written over them
            done.add(target)
