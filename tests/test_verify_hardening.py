"""Issue 17: no candidate can crash, stall or poison the verifier, or the checks beside it.

One test (or more) per class of attack found by an adversarial corpus: text that is not valid UTF-8, trusted code
recursing on candidate data, answers that are costly to decode, processes left at exit, honest checks that shared
a batch with a hostile one.
"""

from __future__ import annotations

import io
import json

import pytest

from distill_ray.verify import Check, SandboxLimits, Verifier
from distill_ray.verify.jsonl import main

SURROGATE_PROGRAMS = {   # each puts a lone surrogate into text the verifier reports
    "exception": Check("gsm8k", "def solution():\n    raise ValueError('\\ud800 bad')\n", expected=1),
    "exception_type": Check("gsm8k", "def solution():\n    raise type('E\\udc80', (Exception,), {})('x')\n",
                            expected=1),
    "answer": Check("p3", "def sol():\n    return '\\udcff'\n", sat="def sat(s: str):\n    return s == 'x'\n"),
    "gsm_answer": Check("gsm8k", "def solution():\n    return '\\udcff'\n", expected=1),
    "test_message": Check("asserts", "def f():\n    return 1\n", tests="assert f() == 2, '\\ud800'\n"),
    "sat_message": Check("p3", "def sol():\n    return 1\n",
                         sat="def sat(x: int):\n    assert x == 2, '\\udfff'\n    return True\n"),
    "honest": Check("gsm8k", "def solution():\n    return 1\n", expected=1),
}


@pytest.fixture(scope="module")
def verifier():
    v = Verifier(SandboxLimits(timeout_s=2), workers=2)
    yield v
    v.close()


def _utf8_ok(text) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ------------------------------------------------------------------ 1. text that is not valid UTF-8

def test_verdict_text_is_always_valid_utf8(verifier):
    out = dict(zip(SURROGATE_PROGRAMS, verifier.verify(list(SURROGATE_PROGRAMS.values()))))
    for name, v in out.items():
        assert _utf8_ok(v.detail) and (v.answer is None or _utf8_ok(v.answer)), (name, v)
        assert len(v.detail) <= 300
    assert out["honest"].passed and not any(v.passed for k, v in out.items() if k != "honest")
    assert "\\ud800" in out["exception"].detail   # escaped, not dropped
    assert out["test_message"].status == "fail" and out["sat_message"].status == "fail"


def test_verdict_text_fits_arrow_and_parquet(verifier, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    out = verifier.verify(list(SURROGATE_PROGRAMS.values()))
    table = pa.table({"answer": [v.answer for v in out], "detail": [v.detail for v in out]})
    pq.write_table(table, tmp_path / "verdicts.parquet")
    assert pq.read_table(tmp_path / "verdicts.parquet").num_rows == len(out)


def test_cli_survives_surrogates(tmp_path):
    """The CLI writes one verdict per record, exit 0, even when the text (or an id) holds lone surrogates."""
    records = [{"id": name, **_record(c)} for name, c in SURROGATE_PROGRAMS.items()]
    records.append({"id": "\ud800-id", "kind": "gsm8k", "program": "def solution():\n    return 1\n", "expected": 1})
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))   # ASCII: surrogates as \u escapes
    dst = tmp_path / "out.jsonl"
    err = io.StringIO()
    assert main([str(src), "--output", str(dst), "--workers", "1"], stderr=err) == 0
    out = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert [o["id"] for o in out] == [r["id"] for r in records]
    assert [o["status"] for o in out][-2:] == ["pass", "pass"]


def _record(c: Check) -> dict:
    rec = {"kind": c.kind, "program": c.program}
    if c.kind == "p3":
        rec["sat"] = c.sat
    elif c.kind == "gsm8k":
        rec["expected"] = c.expected
    else:
        rec["tests"] = c.tests
    return rec
