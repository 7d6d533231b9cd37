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


def test_c_report_encoding_is_byte_for_byte_codecs():
    """Where the helper encodes candidates' answers itself (zygote.c: put_plain), its frame is exactly
    codec.frame({"ok": codec.to_plain(value)}); what it leaves to Python (collections' dicts, types, subclasses,
    objects, nesting at the depth limit) comes back as None."""
    import collections
    import ctypes
    from distill_ray.verify import codec, native
    path = native.build()
    if path is None:
        pytest.skip("no C compiler")
    lib = ctypes.PyDLL(path)
    if not lib.encodes_reports():
        pytest.skip("built without Python's headers: Python encodes every answer")
    lib.report_frame.restype, lib.report_frame.argtypes = ctypes.py_object, [ctypes.py_object]
    nested = deep = []
    for _ in range(99):
        deep.append([])
        deep = deep[0]
    plain = [None, True, False, 0, -7, 10 ** 60, -(10 ** 40), 1.5, 0.1, -0.0, 1e300, 5e-324, float("nan"),
             float("inf"), -float("inf"), "", "plain", "q\"b\\s\n\t\r\b\f\x00\x1f\x7f", "é", "日本", "\U0001F600",
             "\ud800", [1, [2, [3]]], (1, 2), (), set(), {3, 1, 2}, frozenset({"a"}), {}, {1: "a", "b": [1, 2]},
             {(1, 2): {3: 4}}, b"", b"\x00\xffab", 1 + 2j, complex(float("nan"), -0.0), list(range(500)), "x" * 70000,
             nested]
    for value in plain:
        assert lib.report_frame(value) == codec.frame({"ok": codec.to_plain(value)}), repr(value)[:80]

    class Sub(int):
        pass

    too_deep = []
    for _ in range(100):
        too_deep = [too_deep]
    for value in (collections.Counter("aab"), collections.OrderedDict(a=1), int, bool, object(), [object()], Sub(3),
                  [1, Sub(1)], too_deep):
        assert lib.report_frame(value) is None, repr(value)[:80]


def test_plan_made_once_per_batch_is_each_candidates_plan():
    """watching_zygote makes a candidate's sandbox plan once per batch and puts each candidate's pipe ends in:
    the result is the plan sandbox.plan gives for those ends (also when an end is a low fd: then it is the full
    plan)."""
    import os
    from distill_ray.verify import native, sandbox
    from distill_ray.verify.watching_zygote import _flat_plan
    limits = {"cpu_limit": 5, "memory_mb": 512, "file_size_mb": 1, "max_open_files": 64, "max_processes": 4}
    cwd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for uid in (None, sandbox.UID_BASE + 3):
            plans = {}
            for rep_w, out_w in ((10, 11), (57, 12), (3, 9), (4, 2)):
                want = native.flatten(sandbox.plan(limits, uid, cwd, {3: rep_w, 1: out_w, 2: out_w}))
                assert _flat_plan({"limits": limits, "uid": uid}, rep_w, out_w, cwd, plans) == want
    finally:
        os.close(cwd)


def test_c_random_skip_is_getrandbits():
    """zygote.c's random_skip (each candidate's own random stream, without Python) advances a random.Random
    exactly as getrandbits(32 * words) does, across refills of its state; the helper uses it only then."""
    import ctypes
    import random
    from distill_ray.verify import native
    path = native.build()
    helper = native.load(path)
    if helper is None or not helper.skips_random:
        pytest.skip("no C helper with Python's headers, or a CPython whose generator layout differs")
    lib = ctypes.PyDLL(path)
    lib.random_skip.argtypes, lib.random_skip.restype = [ctypes.py_object, ctypes.c_int], None
    for words in (1, 2, 623, 624, 625, 1300, 5000):
        ours, theirs = random.Random(words), random.Random(words)
        ours.random()
        theirs.random()   # mid-state: the index is not at a refill
        lib.random_skip(ours, words)
        theirs.getrandbits(32 * words)
        assert [ours.random() for _ in range(3)] == [theirs.random() for _ in range(3)], words


def _corpus() -> list[Check]:
    """Every family's puzzle with its solution and a wrong answer (trusted and untrusted sat), GSM8K programs,
    assert tests, and the ways a candidate ends without an answer: what both paths must judge alike."""
    from distill_ray.tasks import generate_puzzle, list_families

    checks = []
    for i, family in enumerate(list_families()):
        p = generate_puzzle(family, seed=i, difficulty=1 + i % 3)
        for program in (p.sol, "def sol():\n    return None\n"):
            checks.append(Check("p3", program, sat=p.sat, ans_type=p.ans_type, trusted_sat=bool(i % 2)))
    checks += [Check("gsm8k", f"def solution():\n    return {n} * 3\n", expected=30) for n in (10, 11)]
    checks += [Check("asserts", "def add(a, b):\n    return a + b\n", tests="assert add(2, 3) == 5\n"),
               Check("asserts", "def add(a, b):\n    return a - b\n", tests="assert add(2, 3) == 5\n"),
               Check("gsm8k", "def solution():\n    raise ValueError('no')\n", expected=1),
               Check("gsm8k", "def solution():\n    return 'x' * (1 << 40)\n", expected=1),
               Check("gsm8k", "def solution(:\n", expected=1),
               Check("gsm8k", "import sys\ndef solution():\n    sys.exit(3)\n", expected=1),
               Check("p3", "def sol():\n    return 3\n", sat=SAT, ans_type="str")]
    return checks


def test_the_python_and_native_paths_agree_check_for_check(monkeypatch):
    """The conformance test: one corpus through the reference (the pure-Python path) and through each of the C
    helper's two loops, every verdict's status, pass and answer alike. Mixed batches go to zygote_loop (a batch's
    checks from its first untrusted sat on run there); batches without a fresh judge to the watching zygote."""
    from distill_ray.tasks import list_families

    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler: only the pure-Python path exists here")
    corpus, results = _corpus(), {}
    judged = [i for i, c in enumerate(corpus) if c.kind == "p3" and not c.trusted_sat]   # a fresh judge each
    unjudged = [i for i in range(len(corpus)) if i not in judged]
    for mode in ("python", "c loop", "watching zygote"):
        if mode == "python":
            monkeypatch.setenv("DISTILL_RAY_VERIFY_NATIVE", "0")
        else:
            monkeypatch.delenv("DISTILL_RAY_VERIFY_NATIVE", raising=False)
        monkeypatch.setattr(pool, "_NATIVE", [])
        with Verifier(SandboxLimits(timeout_s=3), workers=2) as v:
            fork = v.protections["native_fork"]
            assert fork.startswith("off" if mode == "python" else "on"), fork
            if mode == "watching zygote" and "watching" not in fork:
                pytest.skip(f"no watching zygote here: {fork}")
            if mode == "watching zygote":   # the checks without a fresh judge in batches of their own
                verdicts = dict(zip(unjudged, v.verify([corpus[i] for i in unjudged])))
                verdicts |= dict(zip(judged, v.verify([corpus[i] for i in judged])))
            else:
                verdicts = dict(enumerate(v.verify(corpus)))
        results[mode] = [(verdicts[i].status, verdicts[i].passed, verdicts[i].answer) for i in range(len(corpus))]
    for mode in ("c loop", "watching zygote"):
        disagree = [(c.kind, c.program[:40], p, n) for c, p, n in zip(corpus, results["python"], results[mode])
                    if p != n]
        assert not disagree, (mode, disagree)
        assert {s for s, _, _ in results[mode]} == {"pass", "fail", "error", "memory"}
        assert sum(p for _, p, _ in results[mode]) == len(list_families()) + 2   # every solution, add, 10 * 3
