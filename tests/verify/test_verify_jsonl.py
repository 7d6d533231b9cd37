"""The JSONL front end of the verifier: record parsing, malformed lines, order, per-record timeout, the CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from distill_ray.verify import SandboxLimits, Verifier
from distill_ray.verify.budget import wall_cap
from distill_ray.verify.jsonl import main, verify_jsonl

GOOD_GSM = {"kind": "gsm8k", "program": "def solution():\n    return 6 * 7\n", "expected": 42}
GOOD_P3 = {"kind": "p3", "program": "def sol():\n    return [1, 2]\n",
           "sat": "def sat(x: List[int]):\n    return sum(x) == 3\n"}
GOOD_ASSERTS = {"kind": "asserts", "program": "def inc(x):\n    return x + 1\n",
                "tests": ["assert inc(1) == 2", "assert inc(-1) == 0"]}


@pytest.fixture(scope="module")
def verifier():
    v = Verifier(SandboxLimits(timeout_s=2), workers=2)
    yield v
    v.close()


def run(lines, verifier, **kw):
    return list(verify_jsonl(lines, verifier=verifier, **kw))


def test_kinds_pass_and_fail(verifier):
    recs = [{"id": "g", **GOOD_GSM}, {"id": "p", **GOOD_P3}, {"id": "a", **GOOD_ASSERTS},
            {"id": "g-str", **GOOD_GSM, "expected": "42"}, {"id": "g-comma", **GOOD_GSM, "expected": "1,042",
                                                              "program": "def solution():\n    return 1042\n"},
            {"id": "a-str", **GOOD_ASSERTS, "tests": "assert inc(1) == 2\n"},
            {"id": "g-wrong", **GOOD_GSM, "expected": 41},
            {"id": "a-wrong", **GOOD_ASSERTS, "tests": ["assert inc(1) == 3"]},
            {"id": "he", "kind": "asserts", "program": "def add(a, b):\n    return a + b\n",
             "tests": "def check(candidate):\n    assert candidate(1, 2) == 3\n", "entry_point": "add"}]
    out = run([json.dumps(r) for r in recs], verifier)
    assert [o["id"] for o in out] == [r["id"] for r in recs]
    assert [o["status"] for o in out] == ["pass"] * 6 + ["fail"] * 2 + ["pass"]
    for o in out:
        assert set(o) >= {"id", "passed", "status", "detail", "seconds"}
        assert o["passed"] is (o["status"] == "pass") and isinstance(o["seconds"], float)
    assert out[0]["answer"] == "42"


@pytest.mark.parametrize("line,reason", [
    ("not json", "bad JSON"),
    ('{"id": 1, "kind": "gsm8k"', "bad JSON"),
    ("[1, 2]", "JSON object"),
    ('"a string"', "JSON object"),
    ("null", "JSON object"),
    (b'{"id": 1, "kind": "gsm8k", "program": "\xff", "expected": 1}', "UTF-8"),
    ('{"id": 7, "program": "x"}', "kind"),
    ('{"id": 7, "kind": "lean", "program": "x"}', "unknown kind"),
    ('{"id": 7, "kind": 3, "program": "x"}', "unknown kind"),
    ('{"id": 7, "kind": "gsm8k", "expected": 1}', "program"),
    ('{"id": 7, "kind": "gsm8k", "program": 5, "expected": 1}', "program must be a string"),
    ('{"id": 7, "kind": "gsm8k", "program": "x"}', "expected"),
    ('{"id": 7, "kind": "gsm8k", "program": "x", "expected": "forty"}', "not a number"),
    ('{"id": 7, "kind": "gsm8k", "program": "x", "expected": true}', "number"),
    ('{"id": 7, "kind": "gsm8k", "program": "x", "expected": [1]}', "number"),
    ('{"id": 7, "kind": "gsm8k", "program": "x", "expected": "nan"}', "finite"),
    ('{"id": 7, "kind": "p3", "program": "x"}', "sat"),
    ('{"id": 7, "kind": "p3", "program": "x", "sat": ["def sat(x): pass"]}', "sat must be a string"),
    ('{"id": 7, "kind": "p3", "program": "x", "sat": "s", "ans_type": 3}', "ans_type"),
    ('{"id": 7, "kind": "asserts", "program": "x"}', "tests"),
    ('{"id": 7, "kind": "asserts", "program": "x", "tests": [1, 2]}', "tests"),
    ('{"id": 7, "kind": "asserts", "program": "x", "tests": {"a": 1}}', "tests"),
    ('{"id": 7, "kind": "asserts", "program": "x", "tests": "assert 1", "entry_point": 1}', "entry_point"),
    ('{"id": 7, "kind": "gsm8k", "program": "x", "expected": 1, "timeout_s": -1}', "timeout_s"),
    ('{"id": 7, "kind": "gsm8k", "program": "x", "expected": 1, "timeout_s": "soon"}', "timeout_s"),
    ('{"id": 7, "kind": "gsm8k", "program": "x", "expected": 1, "timeout_s": 1e9}', "timeout_s"),
])
def test_malformed_lines_are_error_verdicts(verifier, line, reason):
    out = run([line, json.dumps({"id": "after", **GOOD_GSM})], verifier)
    assert len(out) == 2
    bad, good = out
    assert bad["status"] == "error" and bad["passed"] is False
    assert bad["detail"].startswith("malformed record:") and reason in bad["detail"], bad
    assert good == {**good, "id": "after", "status": "pass"}
    if '"id": 7' in (line if isinstance(line, str) else ""):
        assert bad["id"] == 7


def test_rejected_and_blank_lines(verifier):
    lines = ["", "   ", json.dumps({"id": 1, **GOOD_P3, "ans_type": "Dict[str, int]"}), "\n",
             json.dumps({"id": 2, **GOOD_P3, "sat": "x = 1\n", "ans_type": "List[int]"})]
    out = run(lines, verifier)
    assert [(o["id"], o["status"]) for o in out] == [(1, "rejected"), (2, "rejected")]


def test_order_preserved_across_chunks_and_timeouts(verifier):
    recs = []
    for i in range(40):
        if i % 13 == 5:
            recs.append({"id": i, "kind": "gsm8k", "program": "while True:\n    pass\n", "expected": 1,
                         "timeout_s": 0.3})
        elif i % 7 == 3:
            recs.append(f"garbage {i}")
        else:
            recs.append({"id": i, **GOOD_GSM, "expected": i, "program": f"def solution():\n    return {i}\n"})
    lines = [r if isinstance(r, str) else json.dumps(r) for r in recs]
    out = run(lines, verifier, chunk_size=6)
    assert len(out) == 40
    for i, (r, o) in enumerate(zip(recs, out)):
        if isinstance(r, str):
            assert o["status"] == "error" and o["id"] is None
        else:
            assert o["id"] == i
            assert o["status"] == ("timeout" if "timeout_s" in r else "pass"), o
            if "timeout_s" in r:   # the record's own budget ended it: by its wall-clock cap at the latest
                assert o["seconds"] < wall_cap(r["timeout_s"]) + 1.0, o   # (+1 s: the kill and reap, under load)


def test_is_lazy():
    """Records are consumed chunk by chunk, not all read up front."""
    consumed = []

    def lines():
        for i in range(10):
            consumed.append(i)
            yield json.dumps({"id": i, **GOOD_GSM})

    it = verify_jsonl(lines(), SandboxLimits(timeout_s=2), workers=1, chunk_size=3)
    first = next(it)
    assert first["id"] == 0 and len(consumed) == 3
    rest = list(it)
    assert [o["id"] for o in rest] == list(range(1, 10))


def test_main_files(tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join([json.dumps({"id": "a", **GOOD_GSM}), "{bad", json.dumps({"id": "b", **GOOD_P3})])
                   + "\n", encoding="utf-8")
    err = io.StringIO()
    assert main([str(src), "--output", str(dst), "--workers", "1", "--timeout-s", "2", "--memory-mb", "256"],
                stderr=err) == 0
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [(o["id"], o["status"]) for o in out] == [("a", "pass"), (None, "error"), ("b", "pass")]
    stats = err.getvalue()
    assert "verified 3 records" in stats and "pass=2" in stats and "error=1" in stats and "checks/s" in stats


def test_cli_stdin_stdout():
    lines = [json.dumps({"id": i, **GOOD_GSM}) for i in range(3)] + ["oops"]
    r = subprocess.run([sys.executable, "-m", "distill_ray.verify", "-", "--output", "-", "--workers", "1"],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["status"] for o in out] == ["pass"] * 3 + ["error"]
    assert [o["id"] for o in out] == [0, 1, 2, None]
    assert "checks/s" in r.stderr and "pass=3" in r.stderr
