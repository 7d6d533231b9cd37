"""The forker's batched path for p3/gsm8k: a zygote forks the candidates, the forker watches them.

(Where the C helper is loaded and no check of the batch needs a fresh judge, watching_zygote.py runs it instead:
there the zygote watches too. This module is the path for untrusted sats, and without the helper. Why the work
is split this way, with the measurements behind it: docs/verify-performance.md.)

The forking is done by a zygote, forked from the forker once per batch, whose loop between forks is a
few syscalls (fork, report the pid, reap, report the status; in C where the helper could be built, native.py,
else ~50 faults of Python per fork); the forker does all the watching and, no longer forking per check, keeps
its pages its own. Everything the zygote and the candidates need is made before the zygote is forked: the
compiled program (`children.precompile`: compile() is the costliest step of a fresh child), the sandbox plan
(`sandbox.plan`: the child only runs syscalls), warmed-up interpreter caches (`children.warm_up`). Of the ~140
faults a candidate still takes, ~40 map library code its parent has but a fork does not copy page tables for
(~610 pages, by fault-around), the rest copy or allocate the ~110 pages it writes (read from its pagemap: ~80 of
pymalloc's arenas, ~23 of libpython's static data, a few of the heap and stack): the interpreter's own state any
Python code touches, the program and its answer. Replies go to
the worker several per message (Outbox), which passes trusted sats to its judge several per write and verdicts to
the Verifier several per message: each message wakes a process, which costs more than the message.

Per check, strictly one candidate at a time (the candidate uid's RLIMIT_NPROC and the uid-wide kill rely on it):
zygote forks -> forker waits for the answer (deadline) -> kills the uid -> "r": zygote reaps, sends the wait
status -> for an untrusted sat, "j": the zygote forks the sat's fresh judge (planned before the zygote was forked,
so from memory no candidate code ran in), the forker sends it the plain answer, waits, kills the judge uid, "r"
-> forker empties the scratch dir and private tmp -> "n": next. (With the C loop the forker kills the process
group only, and the zygote, on "r", the uid where the check left any process: zygote.c, kill_and_reap.)
"""

from __future__ import annotations

import functools
import os
import random
import signal
import struct
import time

from distill_ray.verify import children, codec, native, sandbox, watching_zygote
from distill_ray.verify.budget import wall_cap

_INT = struct.Struct("<i")


class Scratch:
    """The forker's scratch dir, reused: emptied after every check instead of created and removed each time.

    Children get it as an open fd (fchdir), so what they see is the inode we checked, whatever a candidate did
    to the path. After each check: if the path is no longer that very dir (a candidate renamed it or put a
    link there) or cannot be emptied, a fresh one replaces it; otherwise its contents are removed.
    """

    def __init__(self, uid: int | None, private_tmp: bool):
        self.uid, self.private_tmp = uid, private_tmp
        self._create()

    def _create(self) -> None:
        self.path = sandbox.make_private_dir()
        if self.uid is not None:
            os.chown(self.path, self.uid, self.uid)
        os.chmod(self.path, 0o700)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        self.ident = os.fstat(self.fd)
        self.flags = _inode_flags(self.fd)
        # On our private tmpfs a dir's st_size counts its entries (see sandbox.wipe_private_tmp): this size
        # means empty, and reset() need not list it.
        self.empty_size = self.ident.st_size if self.private_tmp else None

    def reset(self) -> bool:
        """Empty it for the next candidate; True if it had to be replaced by a new dir (a new fd).

        Beside its entries, what its owner (the candidate uid) can change on it: its mode (compared), times (reset
        here), extended attributes and ACLs, inode flags (chattr): any of these, and it is replaced."""
        try:
            os.utime(self.fd, ns=(0, 0))
            st = os.lstat(self.path)
            same = (st.st_ino, st.st_dev, st.st_mode) == (self.ident.st_ino, self.ident.st_dev, self.ident.st_mode) \
                and not os.listxattr(self.fd) and _inode_flags(self.fd) == self.flags
            if same and st.st_size == self.empty_size:
                return False
            names = os.listdir(self.path) if same else None
        except OSError:
            same, names = False, None
        if same and not names:
            return False
        if same:
            remove_all(self.path, names)
            try:
                if not os.listdir(self.path):
                    return False
            except OSError:
                pass
        self.close()
        self._create()
        return True

    def close(self) -> None:
        os.close(self.fd)
        try:
            st = os.lstat(self.path)
            if (st.st_ino, st.st_dev) == (self.ident.st_ino, self.ident.st_dev):
                sandbox.rmtree(self.path)
        except OSError:
            pass


def _inode_flags(fd: int) -> int:
    """The dir's inode flags (FS_IOC_GETFLAGS), 0 where the file system has none."""
    return sandbox.inode_flags(fd)


def remove_all(d: str, names) -> None:
    """Remove the entries `names` of dir d, never following a symlink."""
    for name in names:
        path = os.path.join(d, name)
        if os.path.isdir(path) and not os.path.islink(path):
            sandbox.rmtree(path)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


FLUSH_REPLIES = 16    # replies per message to the worker, at most
FLUSH_S = 0.005       # a reply waits for others at most this long, plus the time of the check after it


class Outbox:
    """Replies go to the worker several per message: each message wakes the worker (and through it the judge and
    the Verifier) once, which costs more than the reply itself. Slow checks still stream (FLUSH_S)."""

    def __init__(self, send):
        self.send, self.replies, self.since = send, [], 0.0

    def add(self, reply: dict) -> None:
        now = time.monotonic()
        if not self.replies:
            self.since = now
        self.replies.append(reply)
        if len(self.replies) >= FLUSH_REPLIES or now - self.since >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if self.replies:
            self.send(self.replies)
            self.replies = []


def run_batch(jobs: list[dict], scratch: Scratch, send, send_records, sock: int) -> None:
    """Run p3/gsm8k jobs in order; their replies go out in order, a few at a time: send(replies) from a zygote of
    this module, records from a watching zygote (watching_zygote.py, which runs them where it can: on the socket
    sock, or through send_records(bytes))."""
    out = Outbox(send)
    i = 0
    while i < len(jobs):
        out.flush()
        watched = watching_zygote.run(jobs, i, scratch, send_records, sock)
        i = _with_zygote(jobs, i, scratch, out.add) if watched is None else watched
    out.flush()


def _with_zygote(jobs: list[dict], first: int, scratch: Scratch, send) -> int:
    """Start a zygote for jobs[first:]; return the index of the first job it did not run."""
    for job in jobs[first:]:
        if "code" not in job:
            job["code"] = children.precompile(job["program"])   # before the fork: the zygote inherits it
    plans = [(job, *os.pipe(), *os.pipe()) for job in jobs[first:]]   # (job, rep_r, rep_w, out_r, out_w)
    # All the zygote's loop will need, made here: between forks it then only runs syscalls (see the docstring)
    runs = [(sandbox.plan(job["limits"], job["uid"], scratch.fd, {children.REPORT_FD: rep_w, 1: out_w, 2: out_w}),
             functools.partial(children.run_candidate, job["kind"], job["program"], job["code"]), (rep_w, out_w))
            for job, _, rep_w, _, out_w in plans]   # [plan, body, the fds the zygote closes once it is forked]
    judges = [_judge_plan(job) if job.get("sat") else None for job in jobs[first:]]
    helper = _helper_args(runs, judges)
    ctl_r, ctl_w = os.pipe()
    info_r, info_w = os.pipe()
    try:
        zpid = sandbox.raw_fork()
    except OSError as e:
        zpid, why = -1, e
    if zpid == 0:
        _zygote(plans, runs, judges, helper, ctl_r, ctl_w, info_r, info_w)   # never returns
    # The zygote's children draw random's stream from where the zygote got it, each one a word further (up to two
    # forks per job); skip those words here, so the next zygote's children do not repeat them.
    random.getrandbits(64 * len(runs))
    for fd in [ctl_r, info_w] + [fd for p in plans for fd in (p[2], p[4])] + [fd for j in judges if j for fd in j[2]]:
        os.close(fd)
    index = first
    try:
        for (job, rep_r, _, out_r, _), judge in zip(plans, judges):
            if zpid < 0:
                reply, state = {"error": f"forker: {why}", "seconds": 0.0}, "next"
            else:
                reply, state = _one(job, rep_r, out_r, judge, ctl_w, info_r, scratch, zpid, helper is not None)
            if state == "next" and not _tell(ctl_w, b"n"):   # it forks the next candidate while we reply
                state = "dead"
            send(reply)
            index += 1
            if state != "next":
                break   # it died, or holds the old scratch fd: a fresh zygote for the rest
    finally:
        ours = [fd for _, rep_r, _, out_r, _ in plans for fd in (rep_r, out_r)]
        for fd in ours + [fd for j in judges if j for fd in j[3]]:
            try:
                os.close(fd)
            except OSError:
                pass
        os.close(ctl_w)   # EOF: the zygote exits
        os.close(info_r)
        if zpid > 0:
            try:
                os.waitpid(zpid, 0)
            except ChildProcessError:
                pass
    return index


def _judge_plan(job: dict) -> list:
    """An untrusted sat's fresh judge, prepared before the zygote is forked: on the forker's "j" (after the
    candidate) the zygote forks it, from memory no candidate code ever ran in, and the answer reaches it through
    a pipe. [plan, body, its pipe ends (request, report, output), ours (the other ends)]."""
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    out_r, out_w = os.pipe()
    plan = sandbox.plan(job["limits"], job["judge_uid"], sandbox.root_fd(),
                        {children.REPORT_FD: rep_w, children.REQUEST_FD: req_r, 1: out_w, 2: out_w}, judge=True)
    body = functools.partial(children.judge_request, job["sat"], children.precompile_sat(job["sat"]))
    return [plan, body, (req_r, rep_w, out_w), (req_w, rep_r, out_r)]


def _helper_args(runs: list, judges: list):
    """The C helper's arguments for these runs and judges, or None: the Python loop."""
    if sandbox.NATIVE is None or not sandbox.INHERITED:
        return None
    flat = [native.flatten(plan) for plan, *_ in runs]
    flat_judges = [j and native.flatten(j[0]) for j in judges]
    if any(f is None for f in flat) or any(j and f is None for j, f in zip(judges, flat_judges)):
        return None
    closes = [fd for run in runs for fd in run[2]]
    judge_closes = [fd for j in judges for fd in (j[2] if j else (-1, -1, -1))]
    return native.arrays(flat, closes, flat_judges, judge_closes)


def _zygote(plans: list, runs: list, judges: list, helper, ctl_r: int, ctl_w: int, info_r: int, info_w: int) -> None:
    """The zygote's loop: as little Python as possible between forks (see the module docstring)."""
    try:
        sandbox.prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL)   # the forker's death ends us, which ends the candidates
        sandbox.prctl(sandbox.PR_SET_CHILD_SUBREAPER, 1)   # what candidates start comes back to us (_reap_rest)
        theirs = [ctl_w, info_r] + [fd for p in plans for fd in (p[1], p[3])]   # the forker's ends
        for fd in theirs + [fd for j in judges if j for fd in j[3]]:
            os.close(fd)
        if helper is not None:
            _native_loop(runs, judges, helper, ctl_r, info_w)
            return
        read = os.read
        for i in range(len(runs)):
            if not _serve(runs[i], ctl_r, info_w):
                break
            cmd = read(ctl_r, 1)
            if cmd == b"j" and judges[i] is not None:   # the forker wants sat judged: the fresh judge, then "n"
                if not _serve(judges[i], ctl_r, info_w):
                    break
                cmd = read(ctl_r, 1)
            if cmd != b"n":
                break
    finally:
        os._exit(0)


def _serve(what, ctl_r: int, info_w: int, fork=sandbox.fork_planned, close=os.close, read=os.read, write=os.write,
           waitpid=os.waitpid, pack=_INT.pack) -> bool:
    """Fork one planned process (what: a run or a judge: plan, body, fds to close then), report its pid, reap it on
    "r" and report its wait status; False: stop. (Defaults bind the names: fewer objects touched per fork.)"""
    try:
        pid = fork(what[0], what[1])
    except OSError:
        pid = -1
    for fd in what[2]:
        close(fd)
    write(info_w, pack(pid))
    if pid > 0:
        if read(ctl_r, 1) != b"r":
            return False
        status = waitpid(pid, 0)[1]
        _reap_rest(what[0][6])
        write(info_w, pack(status))
    return True


def _reap_rest(uid) -> None:
    """zygote.c's reap_rest: reap what the reaped candidate started; with a sandbox uid, wait (up to ~10 s,
    killing again) until it is all gone, as it would count against the next candidate's RLIMIT_NPROC."""
    for _ in range(10000):
        try:
            if os.waitpid(-1, os.WNOHANG)[0]:
                continue
        except ChildProcessError:
            return
        if uid is None:
            return
        sandbox.kill_uid(uid)
        time.sleep(0.001)


def _native_loop(runs: list, judges: list, helper, ctl_r: int, info_w: int) -> None:
    """The same loop in C (native.py); it returns into Python only in a candidate or judge, already sandboxed."""
    i = sandbox.NATIVE.zygote_loop(len(runs), *helper, ctl_r, info_w)
    if i >= 0:
        code = 70
        try:
            # what raw_fork's advance of random's state gives process i in the Python loop (its own stream)
            random.getrandbits(32 * (i + 1))
            if i < len(runs):
                runs[i][1]()
            else:
                judges[i - len(runs)][1]()
            code = 0
        except BaseException:
            pass
        finally:
            os._exit(code)


def _tell(fd: int, what: bytes) -> bool:
    try:
        return os.write(fd, what) == len(what)
    except OSError:   # BrokenPipeError: the zygote is gone
        return False


def _read_int(fd: int) -> int | None:
    data = os.read(fd, _INT.size)
    return _INT.unpack(data)[0] if len(data) == _INT.size else None


def _one(job: dict, rep_r: int, out_r: int, judge, ctl_w: int, info_r: int, scratch: Scratch, zpid: int,
         zygote_kills: bool = False) -> tuple[dict, str]:
    """The forker's side of one check: (reply for the worker, "next" | "replaced" (scratch) | "dead" (zygote)).

    The candidate's budget is CPU time (limits' timeout_s, its whole process tree: sandbox.tree_cpu, as the zygote
    zpid is the subreaper of what it starts), with a wall-clock cap (budget.wall_cap); the same for a judge.
    zygote_kills: the zygote is the C loop, which on "r" kills the uid itself where the check left any process
    (zygote.c: kill_and_reap); the forker then kills the process group only."""
    start = time.monotonic()
    limits, uid = job["limits"], job["uid"]
    pid = _read_int(info_r)
    if pid is None or pid < 0:
        return ({"error": "forker: could not start the candidate", "seconds": time.monotonic() - start},
                "dead" if pid is None else "next")
    msg, why, status, tail = _watch(pid, uid, rep_r, out_r, start, limits, ctl_w, info_r, zpid, zygote_kills)
    reply = {"msg": msg, "why": why, "status": status, "tail": tail}
    if judge is not None and status is not None and type(msg) is dict and "ok" in msg \
            and _worth_judging(msg["ok"], job.get("ans_type")):
        reply["judge"], status = _judge(judge, msg["ok"], limits, job["judge_uid"], ctl_w, info_r, zpid,
                                        zygote_kills)
    replaced = scratch.reset()
    if scratch.private_tmp:
        sandbox.wipe_private_tmp(keep=scratch.path)
    sandbox.clear_ipc()
    reply["seconds"] = time.monotonic() - start
    return reply, "dead" if status is None else "replaced" if replaced else "next"


def _watch(pid: int, uid, rep_r: int, out_r: int, start: float, limits: dict, ctl_w: int, info_r: int, zpid: int,
           zygote_kills: bool = False):
    """Wait for a sandboxed process's message (or its budget: CPU timeout_s, wall cap from start), kill its uid,
    have the zygote reap it:
    (message, why, wait status or None if the zygote is gone, output tail). zygote_kills: see _one; the uid is
    still killed here if anything goes wrong before the zygote has reaped (it may be gone)."""
    sink = sandbox.OutputSink(out_r, limits["max_output_bytes"])
    status = None
    try:
        try:
            budget = limits["timeout_s"]
            msg, why = sandbox.wait_message(rep_r, sink, start + wall_cap(budget), limits["max_answer_bytes"],
                                            (budget, start, lambda: sandbox.tree_cpu(zpid, pid)))
        finally:
            sandbox.kill_group(pid)
            if not zygote_kills:
                sandbox.kill_uid(uid)
        status = _read_int(info_r) if _tell(ctl_w, b"r") else None
    finally:
        if zygote_kills and status is None:
            sandbox.kill_uid(uid)
    return msg, why, status, sink.tail()


def _judge(judge: list, answer, limits: dict, uid, ctl_w: int, info_r: int, zpid: int,
           zygote_kills: bool = False) -> tuple[list, int | None]:
    """An untrusted sat's fresh judge (forked by the zygote, see _judge_plan) on the plain answer:
    ([report or None, why], the zygote's last wait status, None if it is gone)."""
    pid = _read_int(info_r) if _tell(ctl_w, b"j") else None
    if pid is None or pid < 0:
        return [None, "could not start the judge"], pid
    start = time.monotonic()
    req_w, rep_r, out_r = judge[3]
    try:
        codec.write_msg(req_w, {"answer": answer})
    except OSError:
        pass   # it is gone: wait_message sees EOF
    msg, why, status, _ = _watch(pid, uid, rep_r, out_r, start, limits, ctl_w, info_r, zpid, zygote_kills)
    return [msg if type(msg) is dict else None, why], status


def _worth_judging(plain, typ) -> bool:
    """Skip sat's process when the worker will fail the answer on its type anyway (it re-checks everything)."""
    from distill_ray.verify.checks import type_ok
    from distill_ray.verify.codec import from_plain
    try:
        return typ is None or type_ok(from_plain(plain), typ)
    except Exception:
        return True   # let the worker classify it
