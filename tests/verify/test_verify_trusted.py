"""The trusted-sat path: p3 checks whose sat is curated are judged by a persistent judge process per worker."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest

from distill_ray.verify import Check, SandboxLimits, Verifier
from distill_ray.verify.jsonl import parse_record
from distill_ray.verify.sandbox import UID_BASE
from tests.verify.procs import processes

SAT42 = "def sat(x: int):\n    return x == 42\n"
# Collatz: halts for every positive n, loops forever on 0 (0 -> 0): a trusted sat that an answer can hang.
COLLATZ = "def sat(n: int):\n    while n != 1:\n        n = n // 2 if n % 2 == 0 else 3 * n + 1\n    return True\n"
# True only on the first call in a process: tells a persistent judge (shared process) from fresh ones.
FIRST_CALL = "def sat(x: int):\n    import sys\n    n = getattr(sys, 'calls', 0)\n    sys.calls = n + 1\n    return n == 0\n"


def trusted(program: str, sat: str = SAT42, **kw) -> Check:
    return Check("p3", textwrap.dedent(program).strip("\n") + "\n", sat=sat, trusted_sat=True, **kw)


def persistent_judges(verifier: Verifier) -> list[int]:
    """Live pids running as some worker's persistent-judge uid (UID_BASE + 3 * worker pid + 2)."""
    uids = {UID_BASE + 3 * w.proc.pid + 2 for w in verifier._workers}
    return [pid for pid, state, _, uid in processes() if uid in uids and state != "Z"]


@pytest.fixture(scope="module")
def verifier():
    v = Verifier(SandboxLimits(timeout_s=1.5), workers=1)
    yield v
    v.close()


def test_verdicts(verifier):
    checks = {
        "pass": trusted("def sol():\n    return 42"),
        "wrong": trusted("def sol():\n    return 41"),
        "wrong_type": trusted("def sol():\n    return 42.0"),
        "sat_raises": trusted("def sol():\n    return 0", sat="def sat(x: int):\n    return 1 / x > 0"),
        "sat_truthy": trusted("def sol():\n    return 3", sat="def sat(x: int):\n    return x"),
        "no_sat": trusted("def sol():\n    return 1", sat="x = 1\n", ans_type="int"),
        "list": trusted("def sol():\n    return [1, 2, 3]", sat="def sat(x: List[int]):\n    return sum(x) == 6"),
    }
    out = dict(zip(checks, verifier.verify(list(checks.values()))))
    want = {"pass": "pass", "wrong": "fail", "wrong_type": "fail", "sat_raises": "fail", "sat_truthy": "fail",
            "no_sat": "invalid", "list": "pass"}
    assert {k: v.status for k, v in out.items()} == want, out
    assert out["pass"].answer == "42" and out["list"].answer == "[1, 2, 3]"
    assert "raised ZeroDivisionError" in out["sat_raises"].detail


HOSTILE = {
    "print_pass": """
        def sol():
            print("PASS")
            print('{"passed": true, "status": "pass", "sat": true}')
            return 0
    """,
    "os_exit": "import os\ndef sol():\n    os._exit(0)",
    "sys_exit": "import sys\nsys.exit(0)\ndef sol():\n    return 42",
    "lying_eq": """
        class Liar(int):
            def __eq__(self, other): return True
            def __bool__(self): return True
        def sol():
            return Liar(0)
    """,
    "patch_builtins": """
        import builtins
        builtins.all = lambda *a: True
        builtins.sum = lambda *a: 42
        def sol():
            return 0
    """,
    "forge_fds": """
        import os, struct, json
        def sol():
            for msg in ({"sat": True, "type": "bool"}, {"ok": 42}):
                data = json.dumps(msg).encode()
                for fd in range(0, 64):
                    try:
                        os.write(fd, struct.pack(">I", len(data)) + data + struct.pack("<i", 0) * 4)
                    except OSError:
                        pass
            os._exit(0)
    """,
    "kill_judges": """
        import os, signal
        def sol():
            for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            return 0
    """,
}


def test_hostile_candidates_never_pass(verifier):
    sat = "def sat(x: int):\n    return all(v > 5 for v in [x]) and sum([x]) == 42 and x == 42\n"
    names = list(HOSTILE)
    out = verifier.verify([trusted(HOSTILE[n], sat=sat) for n in names] + [trusted("def sol():\n    return 42", sat=sat)])
    for name, v in zip(names, out):
        assert not v.passed and v.status != "pass", (name, v)
    assert out[names.index("lying_eq")].status == "error"            # not plain data: never reaches the judge
    assert out[names.index("patch_builtins")].status == "fail"       # the judge has the real builtins
    assert out[-1].status == "pass", out[-1]                          # and the judge still works afterwards


def test_looping_sat_times_out_and_judge_recovers(verifier):
    big = trusted("def sol():\n    return list(range(200_000))",    # a request far larger than a pipe buffer
                  sat="def sat(x: List[int]):\n    return len(x) == 200_000 and x[-1] == 199_999")
    checks = [trusted("def sol():\n    return 27", sat=COLLATZ), trusted("def sol():\n    return 0", sat=COLLATZ),
              big, trusted("def sol():\n    return 6", sat=COLLATZ), trusted("def sol():\n    return 42")]
    out = verifier.verify(checks)
    assert [v.status for v in out] == ["pass", "timeout", "pass", "pass", "pass"], out
    assert "sat timed out" in out[1].detail
    assert verifier.verify([trusted("def sol():\n    return 42")])[0].passed   # and in the next batch


def test_trusted_judge_is_persistent_and_untrusted_is_fresh():
    with Verifier(SandboxLimits(timeout_s=2), workers=1) as v:
        fresh = v.verify([Check("p3", "def sol():\n    return 1\n", sat=FIRST_CALL)] * 3)
        assert [x.status for x in fresh] == ["pass"] * 3, fresh   # a new judge process per check
        if v.protections["uid_drop"].startswith("on"):
            assert persistent_judges(v) == []                     # no persistent judge was started
        shared = v.verify([trusted("def sol():\n    return 1\n", sat=FIRST_CALL)] * 3)
        assert [x.status for x in shared] == ["pass", "fail", "fail"], shared   # one process for all three
        if v.protections["uid_drop"].startswith("on"):
            assert len(persistent_judges(v)) == 1                 # still up between batches, under its own uid


def test_jsonl_field():
    rec = {"kind": "p3", "program": "def sol():\n    return 42", "sat": SAT42}
    assert parse_record(rec).trusted_sat is False
    assert parse_record({**rec, "trusted_sat": True}).trusted_sat is True
    with pytest.raises(ValueError, match="trusted_sat"):
        parse_record({**rec, "trusted_sat": "yes"})
    with Verifier(SandboxLimits(timeout_s=2), workers=1) as v:
        assert v.verify([Check("p3", "def sol():\n    return 42\n", sat=SAT42, trusted_sat=1)])[0].status == "invalid"


def test_pipeline_rows_from_curated_sources_are_trusted():
    from distill_ray.stages.verify import row_check
    base = {"kind": "p3", "program": "def sol():\n    return 42", "sat": SAT42, "ans_type": "int", "expected": None,
            "tests": "", "entry_point": ""}
    rows = pd.DataFrame([{**base, "source": s} for s in ("puzzles", "p3", "jsonl")])
    assert [row_check(r).trusted_sat for r in rows.itertuples(index=False)] == [True, True, False]
