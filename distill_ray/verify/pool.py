"""The Verifier: the caller-side handle on a pool of pre-started worker processes.

Each worker is a separate interpreter exec'd with a fixed environment (WORKER_ENV); its forker forks one sandboxed
process per candidate (plus one per judge), which costs a fork of a small process instead of a fresh interpreter.
Checks are dispatched in small chunks to whichever worker is free; a worker that dies or stops answering is
killed and replaced, and its unfinished checks are retried once on another worker (then get status "error").
"""

from __future__ import annotations

import atexit
import json
import math
import os
import selectors
import struct
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

from distill_ray.verify.codec import safe_text
from distill_ray.verify.procfs import children_of
from distill_ray.verify.schema import KINDS, MAX_TIMEOUT_S, Check, SandboxLimits, Verdict, wall_cap

_ROOT = str(Path(__file__).resolve().parents[2])
# -S: no `site`. What it imports, mostly for the .pth files of a big environment (pathlib, urllib, ipaddress,
# import hooks: ~0.75 MB of heap), the worker would hold and every candidate fork copy page table entries for.
# The directories it would add to sys.path (site-packages) come as arguments, so candidates import the same
# installed packages (except ones that only a .pth file makes importable).
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); sys.path += sys.argv[2:]; "
         "from distill_ray.verify.worker import main; main()")
_HEADER = struct.Struct(">I")
# The worker's whole environment. LD_BIND_NOW: the dynamic linker resolves every symbol at start-up, instead of
# each forked candidate resolving (and writing, i.e. copying, the pages of) the ones it is the first to call.
WORKER_ENV = {"LD_BIND_NOW": "1"}
CHUNK = 32   # checks per message to a worker, at most (64 measured no better)
MAX_REQUEUES = 4   # a check whose worker is lost more often than this (none of them running it) ends as an error
CLOSE_GRACE_S = 45.0   # a closing worker's own clean-up is bounded by ~32 s (worker._shut_down); then SIGKILL
UID_BASE = 1_000_000_000   # sandbox.UID_BASE (not imported here: sandbox loads ctypes and the C helper's glue)


_NATIVE: list = []


def _native_path() -> str | None:
    """The C fork-loop helper for workers (built once per process; None: they use the Python loop)."""
    if not _NATIVE:
        from distill_ray.verify import native
        _NATIVE.append(native.build())
    return _NATIVE[0]


def _site_dirs() -> list[str]:
    """The site-packages dirs `site` gives this interpreter (what -I without -S put on the worker's sys.path)."""
    import site
    return [d for d in site.getsitepackages() if os.path.isdir(d)]


def _frame(obj) -> bytes:
    data = json.dumps(obj).encode()
    return _HEADER.pack(len(data)) + data


class _Worker:
    def __init__(self, limits: dict):
        # -I: ignore PYTHON* variables, user site and cwd; env: nothing of ours reaches /proc/<pid>/environ.
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-X", "int_max_str_digits=0", "-c", _BOOT, _ROOT, *_site_dirs()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=WORKER_ENV, close_fds=True, start_new_session=True)
        self.buf = bytearray()
        self.pending: list[int] = []       # indices of checks sent and not yet answered
        self.lost: list | None = None      # [why, index or None]: it lost its forker, and exits (see worker.py)
        self.last_progress = time.monotonic()
        self.send({"limits": limits, "native": _native_path()})
        hello = self.read_blocking()
        self.protections = hello["hello"]

    def send(self, obj) -> None:
        self.proc.stdin.write(_frame(obj))
        self.proc.stdin.flush()

    def read_blocking(self):
        head = self.proc.stdout.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise RuntimeError("verifier worker failed to start")
        return json.loads(self.proc.stdout.read(_HEADER.unpack(head)[0]))

    def feed(self) -> list | None:
        """Read available bytes; return complete messages, or None at EOF."""
        data = os.read(self.proc.stdout.fileno(), 1 << 16)   # (below malloc's mmap threshold)
        if not data:
            return None
        self.buf += data
        out = []
        while len(self.buf) >= _HEADER.size:
            (n,) = _HEADER.unpack_from(self.buf)
            if len(self.buf) < _HEADER.size + n:
                break
            out.append(json.loads(bytes(self.buf[_HEADER.size:_HEADER.size + n])))
            del self.buf[:_HEADER.size + n]
        return out

    def kill(self, grace_s: float = 0.0) -> None:
        """Stop the worker; with a grace period it first gets EOF, so it can finish cleaning up its sandboxes.

        Then what it left that came back to this process is ended and reaped (_sweep): where this process is a
        subreaper (a container's init, a supervisor), the worker's orphans are reparented to it, not to init."""
        pid = self.proc.pid
        if grace_s > 0:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=grace_s)
            except (OSError, subprocess.TimeoutExpired):
                pass
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        _sweep(pid, thorough=self.proc.returncode != 0)


class Verifier:
    """Verifies checks in sandboxed processes. Use as a context manager, or call close()."""

    def __init__(self, limits: SandboxLimits | None = None, workers: int = 1):
        self.limits = limits or SandboxLimits()
        self._wire_limits = {**self.limits.to_dict(), "cpu_limit": self.limits.cpu_limit()}
        self._workers = [_Worker(self._wire_limits) for _ in range(max(1, workers))]
        uid_drop = self._workers[0].protections["uid_drop"]
        if os.geteuid() == 0 and not uid_drop.startswith("on") and not self.limits.allow_unsafe:
            self.close()
            raise RuntimeError(f"refusing to run candidates as root ({uid_drop}); "
                               "pass SandboxLimits(allow_unsafe=True) to opt in")
        self._lock = threading.Lock()
        # A chunk may wait this long without any verdict before its worker is declared hung.
        self._stall_s = 2 * wall_cap(self.limits.timeout_s) + 30
        _OPEN.add(self)

    @property
    def protections(self) -> dict:
        """Which isolation mechanisms are active on this machine ("on ..." or "off: reason")."""
        return dict(self._workers[0].protections)

    def verify(self, checks: list[Check]) -> list[Verdict]:
        with self._lock:
            results: list[Verdict | None] = [None] * len(checks)
            todo = []
            for i, check in enumerate(checks):
                problem = _malformed(check)
                if problem:
                    results[i] = Verdict(False, "invalid", None, problem, 0.0)
                else:
                    todo.append(i)
            self._run(checks, todo, results)
            return results

    def _run(self, checks, todo: list[int], results: list) -> None:
        queue = self._queue = list(reversed(todo))
        self._struck: dict[int, int] = {}     # times a check was (or may have been) running when its worker was lost
        self._requeued: dict[int, int] = {}   # times a check went back to the queue, for whatever reason
        sel = self._sel = selectors.DefaultSelector()
        for w in self._workers:
            sel.register(w.proc.stdout, selectors.EVENT_READ, w)
        slowest = max([checks[i].timeout_s or 0 for i in todo], default=0)
        self._stall_s = 2 * wall_cap(max(self.limits.timeout_s, slowest)) + 30
        try:
            while queue or any(w.pending for w in self._workers):
                for w in self._workers:
                    if not w.pending and queue:
                        self._dispatch(w, checks, queue)
                for key, _ in sel.select(timeout=1.0):
                    self._collect(key.data, sel, results, checks, queue)
                for w in list(self._workers):
                    if w.pending and time.monotonic() - w.last_progress > self._stall_s:
                        self._replace(w, sel, results, "verifier worker stopped answering")
        finally:
            sel.close()

    def _dispatch(self, w: _Worker, checks, queue: list[int]) -> None:
        if w.proc.poll() is not None or w.lost is not None:   # died (or is exiting) between batches: replace it
            w = self._replace(w, self._sel, [], "")
        # up to CHUNK per chunk: per-chunk costs (a zygote fork in the forker, messages) are spread thin
        size = max(1, min(CHUNK, math.ceil(len(queue) / (4 * len(self._workers)))))
        chunk = []
        while queue and len(chunk) < size:
            if queue[-1] in self._struck:   # it may crash or stall a forker: it runs alone, in a chunk of its own
                if not chunk:
                    chunk.append(queue.pop())
                break
            chunk.append(queue.pop())
        w.pending = chunk
        w.last_progress = time.monotonic()
        try:
            w.send([[i, dict(vars(checks[i]))] for i in chunk])   # flat fields: no need for asdict's deep copy
        except (BrokenPipeError, OSError):
            pass   # noticed as EOF by the selector

    def _collect(self, w: _Worker, sel, results, checks, queue) -> None:
        msgs = w.feed()
        if msgs is None:
            self._replace(w, sel, results, "verifier worker died")
            return
        for ready in msgs:   # each message: the verdicts the worker had ready, [[index, verdict], ...]
            if type(ready) is dict:   # {"lost": [why, index]}: it lost its forker; EOF follows
                w.lost = ready.get("lost")
                continue
            for index, v in ready:
                results[index] = _verdict(v)
                w.pending.remove(index)
            w.last_progress = time.monotonic()

    def _replace(self, w: _Worker, sel, results, why: str) -> _Worker:
        """Replace a dead or hung worker; its unanswered checks go back to the queue.

        A check that was (or, without word from the worker, may have been) running when the worker or its forker
        died or stalled runs again alone on a fresh worker (it may be the cause; the worker may also have been
        killed from outside); if that one is lost too, the check ends as an error. The checks that only shared
        its batch run again as usual."""
        sel.unregister(w.proc.stdout)
        w.kill(grace_s=2.0 if w.lost else 0.0)   # it is exiting by itself: let it reap what it started
        lost_why, suspect = w.lost if type(w.lost) is list and len(w.lost) == 2 else (why, None)
        for i in w.pending:
            if w.lost is not None and suspect is not None and i != suspect:
                self._requeue(i, results, f"{why} ({lost_why})")
            elif self._struck.get(i, 0) >= 1:
                results[i] = Verdict(False, "error", None,
                                     safe_text(f"{why}: {lost_why} while this check ran (twice, each time alone)"), 0.0)
            else:
                self._struck[i] = self._struck.get(i, 0) + 1
                self._requeue(i, results, f"{why} ({lost_why})")
        w.pending = []
        fresh = _Worker(self._wire_limits)
        self._workers[self._workers.index(w)] = fresh
        sel.register(fresh.proc.stdout, selectors.EVENT_READ, fresh)
        return fresh

    def _requeue(self, i: int, results, why: str) -> None:
        """Back to the queue, a few times at most (so that nothing loops forever, whatever keeps killing workers)."""
        self._requeued[i] = self._requeued.get(i, 0) + 1
        if self._requeued[i] > MAX_REQUEUES:
            results[i] = Verdict(False, "error", None, safe_text(f"{why}, {MAX_REQUEUES} times"), 0.0)
        else:
            self._queue.append(i)

    def close(self) -> None:
        workers, self._workers = getattr(self, "_workers", []), []
        for w in workers:   # EOF to all first: they shut down (and reap what they started) side by side
            try:
                w.proc.stdin.close()
            except OSError:
                pass
        for w in workers:
            w.kill(grace_s=CLOSE_GRACE_S)
        _OPEN.discard(self)

    def __enter__(self) -> "Verifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


_OPEN: "weakref.WeakSet[Verifier]" = weakref.WeakSet()


@atexit.register
def _close_open() -> None:
    """A Verifier still open when the interpreter exits is closed: its workers reap all they started first."""
    for v in list(_OPEN):
        try:
            v.close()
        except Exception:
            pass


def _of_worker(pid: int, worker: int) -> bool:
    """Is our child pid something the worker started: in its session (forker, zygotes, judges, candidates; the
    worker is a session leader, and its session id cannot be reused while a member exists, zombies included), or
    running as one of its sandbox uids (a candidate's process in a session of its own)?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            session = int(f.read().rsplit(b")", 1)[1].split()[3])
        with open(f"/proc/{pid}/status", "rb") as f:
            uid = int(next(line for line in f if line.startswith(b"Uid:")).split()[1])
    except (OSError, IndexError, ValueError, StopIteration):
        return False
    return session == worker or UID_BASE + 3 * worker <= uid < UID_BASE + 3 * worker + 3


def _sweep(worker: int, thorough: bool, wait_s: float = 10.0) -> None:
    """End and reap what an exited worker left that came back to us (see _Worker.kill). A worker that exited by
    itself has already killed and reaped everything (worker._shut_down), so normally this finds nothing and costs
    one read of our children list. thorough (it was killed, or could not end everything): first kill its sandbox
    uids, whose processes may have been reparented elsewhere, from a throwaway process that takes the uid."""
    if thorough and os.geteuid() == 0:
        for uid in range(UID_BASE + 3 * worker, UID_BASE + 3 * worker + 3):
            try:
                subprocess.run([sys.executable, "-I", "-S", "-c", _KILL_UID, str(uid)], timeout=5,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except (OSError, subprocess.SubprocessError):
                pass
    deadline = time.monotonic() + wait_s
    while True:
        left = [pid for pid in children_of(os.getpid()) if _of_worker(pid, worker)]
        if not left or time.monotonic() > deadline:
            return
        for pid in left:   # our children: their pids cannot be reused before we reap them
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


_KILL_UID = ("import os, sys\nu = int(sys.argv[1])\nos.setresgid(u, u, u)\nos.setresuid(u, u, u)\n"
             "try:\n    os.kill(-1, 9)\nexcept ProcessLookupError:\n    pass\n")


def _verdict(v: dict) -> Verdict:
    """A worker's verdict message as a Verdict. Its text is made UTF-8-safe again here (the worker does it too): the
    caller writes it to JSONL and Parquet, which take no lone surrogates."""
    answer = v["answer"]
    return Verdict(v["passed"] is True, v["status"], None if answer is None else safe_text(answer),
                   safe_text(v["detail"]), v["seconds"])


def _malformed(check) -> str:
    if not isinstance(check, Check):
        return f"not a Check: {type(check).__name__}"
    if check.kind not in KINDS:
        return f"unknown kind {check.kind!r}"
    if not isinstance(check.program, str) or not all(isinstance(getattr(check, f), str)
                                                     for f in ("sat", "ans_type", "tests", "entry_point")):
        return "program, sat, ans_type, tests and entry_point must be strings"
    if type(getattr(check, "trusted_sat", False)) is not bool:
        return "trusted_sat must be a bool"
    t = getattr(check, "timeout_s", None)
    if t is not None and (type(t) not in (int, float) or not 0 < t <= MAX_TIMEOUT_S):
        return f"timeout_s must be a number in (0, {MAX_TIMEOUT_S:g}]"
    return ""


def verify_one(check: Check, limits: SandboxLimits | None = None) -> Verdict:
    """Verify a single check with a one-off Verifier (starts a worker: use a Verifier for many checks)."""
    with Verifier(limits) as v:
        return v.verify([check])[0]
