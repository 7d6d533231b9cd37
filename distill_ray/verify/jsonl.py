"""JSONL front end of the verifier: one check a line in, one verdict a line out, same order.

    python -m distill_ray.verify INPUT.jsonl --output OUT.jsonl [--timeout-s 2] [--memory-mb 512] [--workers 2]

INPUT or OUT ``-`` means stdin/stdout. In (one JSON object a line)::

    {"id": any JSON value, "kind": "p3" | "gsm8k" | "asserts", "program": str,
     "sat": str (p3), "ans_type": str (p3, optional: else sat's first annotation),
     "expected": number or numeric string (gsm8k), "tests": str or list of str (asserts),
     "entry_point": str (optional), "timeout_s": number (optional, this record's CPU budget, see budget.py),
     "trusted_sat": bool (optional, default false; p3: true only for a curated sat, never a model-written one:
                    it then runs in a persistent judge process instead of a fresh one, one fork per check)}

Out::

    {"id", "passed": bool, "status": "pass"|"fail"|"timeout"|"memory"|"error"|"rejected",
     "detail": str, "seconds": float, "answer": str | null}

Statuses are the library's (see the package docstring), except that the library's ``invalid`` (the check
parsed, but is unusable: unsupported ans_type, a sat source that defines no ``sat``, ...) is written as
``rejected``. A line that cannot be turned into a check at all (bad UTF-8 or JSON, not an object, a missing or
wrong-typed field, an unknown kind, a bad timeout_s) yields status ``error`` with ``detail`` starting
"malformed record:"; its id is echoed when one could be read, else null. Blank lines are skipped.

Input is read and verified in chunks (`chunk_size` records), so memory stays bounded on any input size.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from typing import IO, Iterable, Iterator

from distill_ray.verify.codec import safe_text
from distill_ray.verify.pool import Verifier
from distill_ray.verify.schema import KINDS, MAX_TIMEOUT_S, Check, SandboxLimits, Verdict

STATUS_OUT = {"invalid": "rejected"}


class Malformed(ValueError):
    pass


def _number(value, field: str) -> float:
    if type(value) in (int, float):
        x = value
    elif type(value) is str:   # GSM8K writes answers as text, sometimes with thousands separators
        try:
            x = float(value.strip().replace(",", "").replace("_", ""))
        except ValueError:
            raise Malformed(f"{field} {value[:40]!r} is not a number") from None
        if x.is_integer() and abs(x) < 2 ** 53:
            x = int(x)
    else:
        raise Malformed(f"{field} must be a number, not {type(value).__name__}")
    if not math.isfinite(x):
        raise Malformed(f"{field} must be finite")
    return x


def _str(rec: dict, field: str, required: bool = False) -> str:
    if field not in rec or rec[field] is None:
        if required:
            raise Malformed(f"missing field {field!r}")
        return ""
    if type(rec[field]) is not str:
        raise Malformed(f"{field} must be a string, not {type(rec[field]).__name__}")
    return rec[field]


def parse_record(rec) -> Check:
    """A decoded JSON value -> Check; raise Malformed (with a reason) for anything unusable."""
    if type(rec) is not dict:
        raise Malformed(f"a record must be a JSON object, not {type(rec).__name__}")
    kind = rec.get("kind")
    if kind not in KINDS:
        raise Malformed(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})" if "kind" in rec
                        else "missing field 'kind'")
    fields = {"program": _str(rec, "program", required=True), "entry_point": _str(rec, "entry_point")}
    if kind == "p3":
        fields["sat"] = _str(rec, "sat", required=True)
        fields["ans_type"] = _str(rec, "ans_type")
    elif kind == "gsm8k":
        if rec.get("expected") is None:
            raise Malformed("missing field 'expected'")
        fields["expected"] = _number(rec["expected"], "expected")
    else:
        tests = rec.get("tests")
        if type(tests) is list and all(type(t) is str for t in tests):
            tests = "\n".join(tests)
        elif tests is None:
            tests = ""
        elif type(tests) is not str:
            raise Malformed("tests must be a string or a list of strings")
        if not tests.strip() and not fields["entry_point"]:
            raise Malformed("missing field 'tests'")
        fields["tests"] = tests
    if rec.get("trusted_sat") is not None:
        if type(rec["trusted_sat"]) is not bool:
            raise Malformed("trusted_sat must be true or false")
        fields["trusted_sat"] = rec["trusted_sat"]
    if rec.get("timeout_s") is not None:
        t = _number(rec["timeout_s"], "timeout_s")
        if not 0 < t <= MAX_TIMEOUT_S:
            raise Malformed(f"timeout_s must be in (0, {MAX_TIMEOUT_S:g}]")
        fields["timeout_s"] = float(t)
    return Check(kind, **fields)


def _parse_line(line) -> tuple[object, Check | str]:
    """(id, Check) or (id, reason) for a malformed line."""
    try:
        if isinstance(line, (bytes, bytearray)):
            line = bytes(line).decode("utf-8")
        rec = json.loads(line)
    except UnicodeDecodeError as e:
        return None, f"not UTF-8: {e}"
    except (ValueError, RecursionError) as e:
        return None, f"bad JSON: {e}"
    rid = rec.get("id") if type(rec) is dict else None
    try:
        return rid, parse_record(rec)
    except Malformed as e:
        return rid, str(e)


def _out(rid, v: Verdict) -> dict:
    return {"id": rid, "passed": bool(v.passed), "status": STATUS_OUT.get(v.status, v.status),
            "detail": v.detail, "seconds": round(v.seconds, 6), "answer": v.answer}


def verify_jsonl(lines: Iterable[str | bytes], limits: SandboxLimits | None = None, workers: int = 1,
                 chunk_size: int = 512, verifier: Verifier | None = None) -> Iterator[dict]:
    """Verify JSONL records; yield one verdict dict per non-blank line, in input order.

    Lines are consumed `chunk_size` at a time, so any input size runs in bounded memory. Pass `verifier` to
    reuse a running pool (then `limits` and `workers` are ignored and the pool is not closed).
    """
    own = verifier is None
    v = Verifier(limits, workers=workers) if own else verifier
    try:
        chunk: list[tuple[object, Check | str]] = []
        for line in lines:
            if not line.strip():
                continue
            chunk.append(_parse_line(line))
            if len(chunk) >= chunk_size:
                yield from _verify_chunk(v, chunk)
                chunk = []
        if chunk:
            yield from _verify_chunk(v, chunk)
    finally:
        if own:
            v.close()


def _verify_chunk(v: Verifier, chunk: list) -> Iterator[dict]:
    todo = [c for _, c in chunk if isinstance(c, Check)]
    verdicts = iter(v.verify(todo))
    for rid, c in chunk:
        if isinstance(c, Check):
            yield _out(rid, next(verdicts))
        else:
            yield {"id": rid, "passed": False, "status": "error", "detail": safe_text(f"malformed record: {c}")[:300],
                   "seconds": 0.0, "answer": None}


def main(argv: list[str] | None = None, stdin: IO | None = None, stdout: IO | None = None,
         stderr: IO | None = None) -> int:
    """`python -m distill_ray.verify INPUT.jsonl --output OUT.jsonl`; returns the exit status (0 unless a usage
    or I/O error: failed checks and malformed lines are verdicts, not errors)."""
    d = SandboxLimits()
    ap = argparse.ArgumentParser(prog="distill-ray verify", description="Verify JSONL checks in the sandbox.")
    ap.add_argument("input", help="JSONL file of checks, or - for stdin")
    ap.add_argument("--output", "-o", default="-", help="JSONL verdicts (default -: stdout)")
    ap.add_argument("--workers", type=int, default=2, help="sandbox worker processes (default 2)")
    ap.add_argument("--timeout-s", type=float, default=d.timeout_s,
                    help="CPU-time budget per check (wall clock capped at 3x + 1 s)")
    ap.add_argument("--memory-mb", type=int, default=d.memory_mb, help="address-space limit per sandbox")
    ap.add_argument("--cpu-s", type=int, default=d.cpu_s, help="CPU limit per check (0: timeout + 2)")
    ap.add_argument("--max-output-bytes", type=int, default=d.max_output_bytes)
    ap.add_argument("--max-processes", type=int, default=d.max_processes)
    ap.add_argument("--chunk-size", type=int, default=512, help="records read and verified at a time")
    ap.add_argument("--allow-unsafe", action="store_true",
                    help="run even where candidates would keep root (no unprivileged uid possible)")
    ap.add_argument("--quiet", "-q", action="store_true", help="no statistics on stderr")
    args = ap.parse_args(argv)
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    limits = SandboxLimits(timeout_s=args.timeout_s, memory_mb=args.memory_mb, cpu_s=args.cpu_s,
                           max_output_bytes=args.max_output_bytes, max_processes=args.max_processes,
                           allow_unsafe=args.allow_unsafe)
    src = (getattr(stdin, "buffer", stdin) if args.input == "-" else open(args.input, "rb"))
    dst = stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    counts: Counter = Counter()
    start = time.monotonic()
    try:
        for out in verify_jsonl(src, limits, max(1, args.workers), max(1, args.chunk_size)):
            counts[out["status"]] += 1
            dst.write(_line(out))
        dst.flush()
    finally:
        if args.input != "-":
            src.close()
        if args.output != "-":
            dst.close()
    dt = time.monotonic() - start
    n = sum(counts.values())
    if not args.quiet:
        by = ", ".join(f"{k}={counts[k]}" for k in sorted(counts)) or "none"
        print(f"verified {n} records in {dt:.2f}s ({n / dt if dt > 0 else 0:.1f} checks/s): {by}", file=stderr)
    return 0


def _line(out: dict) -> str:
    """One output line: UTF-8 text as is, unless something in it (an id read from the input, say) holds a lone
    surrogate, which no UTF-8 writer takes: then that line is written with JSON's \\u escapes (ASCII)."""
    line = json.dumps(out, ensure_ascii=False) + "\n"
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            line = json.dumps(out) + "\n"
    return line


def stats_line(verdicts: Iterable[dict]) -> str:
    """Counts by status of verdict dicts, e.g. 'error=1, pass=3'."""
    c = Counter(v["status"] for v in verdicts)
    return ", ".join(f"{k}={c[k]}" for k in sorted(c))


if __name__ == "__main__":
    sys.exit(main())
