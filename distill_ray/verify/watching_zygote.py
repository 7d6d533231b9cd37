"""The batched path for checks without a fresh judge (p3 with a trusted sat, gsm8k): a zygote that watches too.

In batch.py's layout the forker (Python) watches every candidate the zygote forks: it reads the pid, waits for
the answer, kills the uid, has the zygote reap, checks the scratch dir, tells the zygote to go on, decodes and
re-encodes the reply. That is five wake-ups per check, Python between them, and every page the forker writes
while a zygote shares its memory is copied once more. Here the C helper (zygote.c: run_watching_zygote) forks
a zygote that never runs Python: it does all of that itself, step for step as batch._one, and appends one
record per check (records.py) to a log it shares with the forker. A candidate returns into Python only to run
its own program: C execs the precompiled code in a copy of the namespace, calls the entry function and encodes
the answer or the exception (zygote.c: run_program, put_plain); Python glue around it wrote ~30 pages per
candidate, i.e. ~30 page copies (docs/verify-performance.md). The forker, in C
as well until the zygote exits, only passes the log's new bytes on to the worker, as they are, a few records
per message: it writes nearly nothing the zygote shares.

The log is MAP_SHARED and the zygote marks it MADV_DONTFORK before its first fork, so no candidate ever maps it
(none can write a record); the zygote's own buffers are DONTFORK too, so no fork copies them. As records are in
the log before the forker is woken, a zygote that dies (killed, say, by a candidate of the same uid) loses
none: the first check without a record is the one that was running, and it alone gets an error. A dir the
candidate left dirty ends the zygote after that check's record: the forker cleans up (Scratch.reset, as
batch._one does) and starts a fresh zygote for the rest; the records the zygote wrote after its last wake-up go
to the worker only after that clean-up (the worker may make dirs of its own once it has them).
"""

from __future__ import annotations

import ctypes
import functools
import os
import random

from distill_ray.verify import children, native, records, sandbox
from distill_ray.verify.budget import wall_cap

STOP_NONE, STOP_DONE, STOP_DIRTY, STOP_FULL, STOP_UNAVAILABLE = range(5)   # zygote.c
LOG_HEAD = 64
RECORD_ROOM = records.RECORD.size + 120 + 4   # a record's fixed part, output tail and frame header (zygote.c)


def run(jobs: list[dict], first: int, scratch, send_records, sock: int) -> int | None:
    """Run jobs[first:] up to the first one with an untrusted sat; their records go to the worker, in order, on the
    socket sock (from C while the zygote runs) or through send_records(bytes). Returns the index of the first job
    not run, or None where this path does not apply (batch.py's runs them)."""
    if sandbox.NATIVE is None or sandbox.NATIVE.run_watching_zygote is None or not sandbox.INHERITED \
            or jobs[first].get("sat"):
        return None
    end = next((k for k in range(first, len(jobs)) if jobs[k].get("sat")), len(jobs))
    todo = jobs[first:end]
    state = _clean_state(scratch)
    if state is None or max(j["limits"]["max_answer_bytes"] for j in todo) + RECORD_ROOM > Log.SIZE - LOG_HEAD:
        return None
    log = Log.open()
    if log is None:
        return None
    try:
        done, stop, last = _with_zygote(todo, scratch, state, log, sock)
    finally:
        log.close()
    if stop == STOP_UNAVAILABLE and done == 0:
        return None
    if stop == STOP_DIRTY:   # cleaned up before the last records go: the worker may make dirs once it has them
        scratch.reset()
        if scratch.private_tmp:
            sandbox.wipe_private_tmp(keep=scratch.path)
        sandbox.clear_ipc()
    elif stop not in (STOP_DONE, STOP_FULL) and done < len(todo):   # it died while this check ran
        last += records.error(done, "forker: the candidate's zygote died")
        done += 1
        sandbox.kill_uid(todo[0]["uid"])   # what it had not reaped goes to the worker, which reaps it
    if last:
        send_records(last)
    return first + done


def _with_zygote(todo: list[dict], scratch, state, log: "Log", sock: int) -> tuple[int, int, bytes]:
    """Run a watching zygote for todo (native.run_watching_zygote: it passes records on as the zygote wakes it):
    (records, why it stopped, the records written after the zygote's last wake-up, not passed on yet)."""
    for job in todo:
        if "code" not in job:
            job["code"] = children.precompile(job["program"])   # before the fork: the zygote inherits it
    pipes = [(*os.pipe(), *os.pipe()) for _ in todo]   # (rep_r, rep_w, out_r, out_w): C closes ours after the fork
    args = _loop_args(todo, pipes, scratch, state)
    if args is None:
        for fd in (fd for p in pipes for fd in p):
            os.close(fd)
        return 0, STOP_UNAVAILABLE, b""
    encodes = sandbox.NATIVE.encodes_reports   # then a body returns the value, C encodes its report
    skips = sandbox.NATIVE.skips_random        # then C advances random's generator (zygote.c: random_skip)
    body = _value if skips else _candidate_value if encodes else _candidate
    ns = children.namespace("__candidate__")
    bodies = (ctypes.py_object * len(todo))(*[   # a program C runs itself (zygote.c: run_program), or Python
        (job["code"], children.ENTRY[job["kind"]], ns) if skips and job["code"] is not None
        else functools.partial(body, i, job) for i, job in enumerate(todo)])
    ours = [fd for p in pipes for fd in p]
    held, zpid = ctypes.c_longlong(0), ctypes.c_int(-1)
    random.getrandbits(64 * len(todo))   # before the fork, which copies it: see _candidate
    done = sandbox.NATIVE.run_watching_zygote(
        len(todo), *args, log.addr, log.size, bodies, children.report_value if encodes else None,
        random._inst if skips else None,
        (ctypes.c_int * len(ours))(*ours), len(ours), sock, ctypes.byref(held), ctypes.byref(zpid))
    if done < 0:
        return 0, STOP_UNAVAILABLE, b""
    os.waitpid(zpid.value, 0)   # it has exited: the C relay returns on its EOF
    written = log.written()
    return done, log.stop(), log.read(held.value, written) if written > held.value else b""


def _candidate(i: int, job: dict) -> None:
    """Candidate i's body, called from C in its sandboxed process."""
    random.getrandbits(32 * (i + 1))   # its own random stream: the zygote's, i + 1 words on
    children.run_candidate(job["kind"], job["program"], job["code"])


def _candidate_value(i: int, job: dict) -> list | None:
    """_candidate where the C helper encodes reports: [the value] for it to report, or None (error reported)."""
    random.getrandbits(32 * (i + 1))
    return _value(i, job)


def _value(i: int, job: dict) -> list | None:
    """_candidate_value where the C helper also advances random's generator."""
    value, err = children.candidate_value(job["kind"], job["program"], job["code"])
    if value is None:
        children.write_msg(children.REPORT_FD, err)
    return value


def _clean_state(scratch) -> tuple[list[str], list[int]] | None:
    """The paths the zygote checks after each candidate, and what they must look like then ((ino, dev, mode, size)
    each, -1: not compared; a size of -1: no entries); None when a private tmp dir's clean size is not known."""
    ident = scratch.ident
    paths = [scratch.path]
    ids = [ident.st_ino, ident.st_dev, ident.st_mode, -1 if scratch.empty_size is None else scratch.empty_size]
    if scratch.private_tmp:
        for d in sandbox.PRIVATE_TMP_DIRS:
            size = sandbox.clean_size(d, keep=scratch.path)
            if size is None:
                return None
            paths.append(d)
            ids += [-1, -1, -1, size]
    return paths, ids


def _loop_args(todo: list[dict], pipes: list, scratch, state) -> tuple | None:
    flat, plans = [], {}
    for job, (_, rep_w, _, out_w) in zip(todo, pipes):
        flat.append(_flat_plan(job, rep_w, out_w, scratch.fd, plans))
        if flat[-1] is None:
            return None
    # per check: CPU budget and wall-clock cap in microseconds (budget.py), output and answer caps, uid
    limits = [v for job in todo for lim in (job["limits"],)
              for v in (int(lim["timeout_s"] * 1e6), int(wall_cap(lim["timeout_s"]) * 1e6), lim["max_output_bytes"],
                        lim["max_answer_bytes"], -1 if job["uid"] is None else job["uid"])]
    closes = [fd for p in pipes for fd in (p[1], p[3])]   # the zygote gives up each candidate's write ends
    watched = [fd for p in pipes for fd in (p[0], p[2])]
    return native.watch_arrays(flat, closes, watched, limits, *state)


_REP, _OUT = 1 << 20, (1 << 20) + 1   # stand-ins for the pipe ends in a plan made once per batch and limits


def _flat_plan(job: dict, rep_w: int, out_w: int, cwd: int, plans: dict) -> list[int] | None:
    """The candidate's sandbox plan as native.flatten gives it. Only the two pipe ends differ from one candidate to
    the next, so the plan is made once (sandbox.plan is ~14 us) with stand-ins put in their place; the dup2 order
    stays right as long as neither end is one of the fds the child sees (0-3), which they never are in practice
    (else: the full plan)."""
    if min(rep_w, out_w) <= children.REPORT_FD:
        return native.flatten(sandbox.plan(job["limits"], job["uid"], cwd, {children.REPORT_FD: rep_w, 1: out_w, 2: out_w}))
    lim = job["limits"]
    key = (lim["cpu_limit"], lim["memory_mb"], lim["file_size_mb"], lim["max_open_files"], lim["max_processes"], job["uid"])
    if key not in plans:
        plans[key] = native.flatten(sandbox.plan(lim, job["uid"], cwd, {children.REPORT_FD: _REP, 1: _OUT, 2: _OUT}))
    template = plans[key]
    if template is None:
        return None
    fds = 2 + 2 * template[1]   # the (target, source) pairs: template[2:fds]
    return template[:2] + [rep_w if v == _REP else out_w if v == _OUT else v for v in template[2:fds]] + template[fds:]


class Log:
    """The log a watching zygote shares with the forker: a header (bytes written, why the zygote stopped), then
    records. Mapped per zygote and unmapped after it, so nothing else the forker forks (asserts candidates, judges)
    ever maps it; MAP_NORESERVE: only the pages records reach are allocated."""

    SIZE = 64 << 20
    _libc = None

    @classmethod
    def open(cls) -> "Log | None":
        if cls._libc is None:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.mmap.restype = ctypes.c_void_p
            libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_long]
            libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
            cls._libc = libc
        prot, flags = 0x1 | 0x2, 0x01 | 0x20 | 0x4000   # PROT_READ|WRITE, MAP_SHARED|ANONYMOUS|NORESERVE
        addr = cls._libc.mmap(None, cls.SIZE, prot, flags, -1, 0)
        return None if addr in (None, ctypes.c_void_p(-1).value) else cls(addr)

    def __init__(self, addr: int):
        self.addr, self.size = addr, self.SIZE
        self._written = ctypes.c_longlong.from_address(addr)   # a new mapping is zeroed: 0 written, STOP_NONE
        self._stop = ctypes.c_int.from_address(addr + 8)

    def close(self) -> None:
        self._libc.munmap(self.addr, self.size)

    def written(self) -> int:
        return self._written.value

    def stop(self) -> int:
        return self._stop.value

    def read(self, start: int, end: int) -> bytes:
        return ctypes.string_at(self.addr + LOG_HEAD + start, end - start)
