"""The forker's batched path for p3/gsm8k: a zygote forks the candidates, the forker watches them.

Where the time goes: on this kind of machine a check costs ~2 ms of CPU and most of it is copy-on-write page
faults (~3 us each here). After a fork, *every* page either process writes is copied once more, so a parent that
runs a lot of Python between two forks (waiting, decoding the answer, killing, cleaning up, replying) pays ~170
faults per check on top of the child's own. So the forking is done by a zygote: a process forked from the forker
once per batch whose loop between forks is a handful of syscalls (fork, report the pid, reap, report the status);
the forker does all the watching, and since the forker itself no longer forks per check, its pages stay its own.

Per check, strictly one candidate at a time (the candidate uid's RLIMIT_NPROC and the uid-wide kill rely on it):
zygote forks -> forker waits for the answer (deadline) -> kills the uid -> "r": zygote reaps, sends the wait
status -> forker empties the scratch dir and private tmp, runs an untrusted sat's fresh judge -> "n": next.
Candidates of up to 64 KiB are compiled by the forker before the zygote forks (`children.precompile`): in a
fresh child, compile() is the costliest step of a trivial check.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import tempfile
import time

from distill_ray.verify import children, sandbox

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
        self.path = tempfile.mkdtemp(prefix="cand-", dir="/tmp" if self.private_tmp else None)
        if self.uid is not None:
            os.chown(self.path, self.uid, self.uid)
        os.chmod(self.path, 0o700)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        self.ident = os.fstat(self.fd)

    def reset(self) -> bool:
        """Empty it for the next candidate; True if it had to be replaced by a new dir (a new fd)."""
        try:
            st = os.lstat(self.path)
            same = (st.st_ino, st.st_dev, st.st_mode) == (self.ident.st_ino, self.ident.st_dev, self.ident.st_mode)
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
                shutil.rmtree(self.path, ignore_errors=True)
        except OSError:
            pass


def remove_all(d: str, names) -> None:
    """Remove the entries `names` of dir d, never following a symlink."""
    for name in names:
        path = os.path.join(d, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def run_batch(jobs: list[dict], scratch: Scratch, send) -> None:
    """Run p3/gsm8k jobs in order; send(reply) for each. A zygote serves until done or scratch is replaced."""
    i = 0
    while i < len(jobs):
        i = _with_zygote(jobs, i, scratch, send)


def _with_zygote(jobs: list[dict], first: int, scratch: Scratch, send) -> int:
    """Start a zygote for jobs[first:]; return the index of the first job it did not run."""
    for job in jobs[first:]:
        if "code" not in job:
            job["code"] = children.precompile(job["program"])   # before the fork: the zygote inherits it
    plans = [(job, *os.pipe(), *os.pipe()) for job in jobs[first:]]   # (job, rep_r, rep_w, out_r, out_w)
    ctl_r, ctl_w = os.pipe()
    info_r, info_w = os.pipe()
    try:
        zpid = sandbox.raw_fork()
    except OSError as e:
        zpid, why = -1, e
    if zpid == 0:
        _zygote(plans, ctl_r, ctl_w, info_r, info_w, scratch.fd)   # never returns
    for fd in [ctl_r, info_w] + [fd for p in plans for fd in (p[2], p[4])]:
        os.close(fd)
    index = first
    try:
        for job, rep_r, _, out_r, _ in plans:
            if zpid < 0:
                reply, state = {"error": f"forker: {why}", "seconds": 0.0}, "next"
            else:
                reply, state = _one(job, rep_r, out_r, ctl_w, info_r, scratch)
            if state == "next" and not _tell(ctl_w, b"n"):   # it forks the next candidate while we reply
                state = "dead"
            send(reply)
            index += 1
            if state != "next":
                break   # it died, or holds the old scratch fd: a fresh zygote for the rest
    finally:
        for job, rep_r, _, out_r, _ in plans:
            for fd in (rep_r, out_r):
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


def _zygote(plans: list, ctl_r: int, ctl_w: int, info_r: int, info_w: int, cwd_fd: int) -> None:
    """The zygote's loop: as little Python as possible between forks (see the module docstring)."""
    try:
        sandbox.prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL)   # the forker's death ends us, which ends the candidates
        os.close(ctl_w)
        os.close(info_r)
        for p in plans:
            os.close(p[1])
            os.close(p[3])
        for job, _, rep_w, _, out_w in plans:
            kind, program, code = job["kind"], job["program"], job["code"]
            try:
                pid = sandbox.fork_sandboxed(lambda: children.run_candidate(kind, program, code), job["limits"],
                                             job["uid"], cwd_fd, {children.REPORT_FD: rep_w, 1: out_w, 2: out_w})
            except OSError:
                pid = -1
            os.close(rep_w)
            os.close(out_w)
            os.write(info_w, _INT.pack(pid))
            if pid > 0:
                if os.read(ctl_r, 1) != b"r":
                    break
                os.write(info_w, _INT.pack(os.waitpid(pid, 0)[1]))
            if os.read(ctl_r, 1) != b"n":
                break
    finally:
        os._exit(0)


def _tell(fd: int, what: bytes) -> bool:
    try:
        return os.write(fd, what) == len(what)
    except OSError:   # BrokenPipeError: the zygote is gone
        return False


def _read_int(fd: int) -> int | None:
    data = os.read(fd, _INT.size)
    return _INT.unpack(data)[0] if len(data) == _INT.size else None


def _one(job: dict, rep_r: int, out_r: int, ctl_w: int, info_r: int, scratch: Scratch) -> tuple[dict, str]:
    """The forker's side of one check: (reply for the worker, "next" | "replaced" (scratch) | "dead" (zygote))."""
    start = time.monotonic()
    limits, uid = job["limits"], job["uid"]
    pid = _read_int(info_r)
    if pid is None or pid < 0:
        return ({"error": "forker: could not start the candidate", "seconds": time.monotonic() - start},
                "dead" if pid is None else "next")
    sink = sandbox.OutputSink(out_r, limits["max_output_bytes"])
    try:
        msg, why = sandbox.wait_message(rep_r, sink, start + limits["timeout_s"], limits["max_answer_bytes"])
    finally:
        sandbox.kill_group(pid)
        sandbox.kill_uid(uid)
    status = _read_int(info_r) if _tell(ctl_w, b"r") else None
    reply = {"msg": msg, "why": why, "status": status, "tail": sink.tail()}
    if job.get("sat") and type(msg) is dict and "ok" in msg and _worth_judging(msg["ok"], job.get("ans_type")):
        sat, answer = job["sat"], msg["ok"]   # untrusted sat: a fresh judge process (forked here, uncommon)
        try:
            jmsg, jwhy = _fresh_judge(lambda: children.judge_sat(sat, answer), limits, job["judge_uid"])
            reply["judge"] = [jmsg if type(jmsg) is dict else None, jwhy]
        except OSError as e:
            reply = {"error": f"forker: {e}"}
    replaced = scratch.reset()
    if scratch.private_tmp:
        sandbox.wipe_private_tmp(keep=scratch.path)
    reply["seconds"] = time.monotonic() - start
    return reply, "dead" if status is None else "replaced" if replaced else "next"


def _worth_judging(plain, typ) -> bool:
    """Skip sat's process when the worker will fail the answer on its type anyway (it re-checks everything)."""
    from distill_ray.verify.checks import type_ok
    from distill_ray.verify.codec import from_plain
    try:
        return typ is None or type_ok(from_plain(plain), typ)
    except Exception:
        return True   # let the worker classify it


def _fresh_judge(body, limits: dict, uid):
    """Fork sat's judge in the sandbox (cwd /), wait for its one message or the deadline, kill its uid, reap."""
    rep_r, rep_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        pid = sandbox.fork_sandboxed(body, limits, uid, "/", {children.REPORT_FD: rep_w, 1: out_w, 2: out_w},
                                     judge=True)
    except BaseException:
        for fd in (rep_r, out_r):
            os.close(fd)
        raise
    finally:
        os.close(rep_w)
        os.close(out_w)
    sink = sandbox.OutputSink(out_r, limits["max_output_bytes"])
    try:
        msg, why = sandbox.wait_message(rep_r, sink, time.monotonic() + limits["timeout_s"], limits["max_answer_bytes"])
    finally:
        sandbox.kill_group(pid)
        sandbox.kill_uid(uid)
        os.close(rep_r)
        os.close(out_r)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    return msg, why
