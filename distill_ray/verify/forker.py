"""The clean forker: a small process that forks candidate processes and has never seen a secret.

A forked child inherits its parent's whole memory, freed heap included. The worker holds expected answers
(gsm8k), test code (asserts) and whole batches of checks, so candidates are not forked from it. The worker
forks this process at start-up, before any check arrives, and afterwards sends it only what a candidate may
see: its own program. Pipe ends travel with the request as SCM_RIGHTS file descriptors.

Ops: "spawn"/"reap" (asserts: the worker talks to the candidate and runs the judge) and "batch" (p3, gsm8k: the
forker runs each candidate start to finish, and p3's sat judge, see run_job, and streams back one reply per job).
Batching saves the worker <-> forker round trips per check, which cost as much as the fork on a loaded machine.
The forker parses candidate messages only as JSON and forwards them; it never decides a verdict.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import socket
import struct
import tempfile
import time

from distill_ray.verify import children, sandbox

_LEN = struct.Struct(">I")


def _send(sock: socket.socket, obj, fds: list[int] = ()) -> None:
    data = json.dumps(obj).encode()
    socket.send_fds(sock, [_LEN.pack(len(data))], list(fds))
    sock.sendall(data)


def _recv(sock: socket.socket):
    head, fds, _, _ = socket.recv_fds(sock, _LEN.size, 8)
    if not head:
        return None, []
    while len(head) < _LEN.size:
        head += sock.recv(_LEN.size - len(head))
    (n,) = _LEN.unpack(head)
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None, fds
        buf += chunk
    return json.loads(buf), fds


def serve(sock: socket.socket) -> None:
    """Forker main loop: "spawn" forks a sandboxed candidate, "reap" returns its wait status."""
    gc.freeze()   # children then leave these objects alone in their collections: fewer copy-on-write faults
    while True:
        req, fds = _recv(sock)
        if req is None:
            os._exit(0)
        if req["op"] == "spawn":
            target = {children.REPORT_FD: fds[0], 1: fds[1], 2: fds[1]}
            if len(fds) > 2:
                target[children.REQUEST_FD] = fds[2]
            if req["kind"] == "asserts":
                body = lambda: children.serve_candidate(req["program"])  # noqa: E731
            else:
                body = lambda: children.run_candidate(req["kind"], req["program"])  # noqa: E731
            try:
                pid = sandbox.fork_sandboxed(body, req["limits"], req["uid"], req["cwd"], target)
                reply = {"pid": pid}
            except OSError as e:
                reply = {"error": str(e)}
            for fd in fds:
                os.close(fd)
            _send(sock, reply)
        elif req["op"] == "batch":
            for job in req["jobs"]:
                _send(sock, run_job(job))
        elif req["op"] == "reap":
            try:
                _, status = os.waitpid(req["pid"], 0)
            except ChildProcessError:
                status = None
            sandbox.reap_orphans()
            _send(sock, {"status": status})


def run_job(job: dict) -> dict:
    """One p3/gsm8k candidate, start to finish, in the forker (no worker round trip per check).

    Private scratch dir, the sandboxed candidate, its report (forwarded as the plain JSON it is, never judged
    here), kill + reap, cleanup of scratch and private tmp; for p3 with an answer, the sat judge too (in a fresh
    process under the judge uid: sat is puzzle text the candidate may see anyway). Expected answers never come
    here; the worker judges.
    """
    start = time.monotonic()
    limits, uid = job["limits"], job["uid"]
    reply: dict = {}
    scratch = None
    try:
        scratch = tempfile.mkdtemp(prefix="cand-", dir="/tmp" if job["private_tmp"] else None)
        if uid is not None:
            os.chown(scratch, uid, uid)
        os.chmod(scratch, 0o700)
        kind, program = job["kind"], job["program"]
        body = lambda: children.run_candidate(kind, program)  # noqa: E731
        msg, why, status, tail = _sandboxed(body, limits, uid, scratch, {}, judge=False)
        reply = {"msg": msg, "why": why, "status": status, "tail": tail}
        if job.get("sat") and type(msg) is dict and "ok" in msg and _worth_judging(msg["ok"], job.get("ans_type")):
            sat, answer = job["sat"], msg["ok"]
            jmsg, jwhy, _, _ = _sandboxed(lambda: children.judge_sat(sat, answer), limits, job["judge_uid"], "/",
                                          {}, judge=True)
            reply["judge"] = [jmsg if type(jmsg) is dict else None, jwhy]
    except OSError as e:
        reply = {"error": f"forker: {e}"}
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        if job["private_tmp"]:
            sandbox.wipe_private_tmp()
        sandbox.reap_orphans()
    reply["seconds"] = time.monotonic() - start
    return reply


def _worth_judging(plain, typ) -> bool:
    """Skip sat's process when the worker will fail the answer on its type anyway (it re-checks everything)."""
    from distill_ray.verify.checks import type_ok
    from distill_ray.verify.codec import from_plain
    try:
        return typ is None or type_ok(from_plain(plain), typ)
    except Exception:
        return True   # let the worker classify it


def _sandboxed(body, limits: dict, uid, cwd: str, fds: dict, judge: bool):
    """Fork body in the sandbox, wait for its one message (or the deadline), kill everything of uid, reap."""
    rep_r, rep_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        pid = sandbox.fork_sandboxed(body, limits, uid, cwd, {children.REPORT_FD: rep_w, 1: out_w, 2: out_w, **fds},
                                     judge=judge)
    except BaseException:
        for fd in (rep_r, out_r):
            os.close(fd)
        raise
    finally:
        os.close(rep_w)
        os.close(out_w)
    sink = sandbox.OutputSink(out_r, limits["max_output_bytes"])
    try:
        deadline = time.monotonic() + limits["timeout_s"]
        msg, why = sandbox.wait_message(rep_r, sink, deadline, limits["max_answer_bytes"])
    finally:
        sandbox.kill_group(pid)
        sandbox.kill_uid(uid)
        os.close(rep_r)
        os.close(out_r)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        status = None
    return msg, why, status, sink.tail()


class ForkerClient:
    """The worker's handle on its forker."""

    def __init__(self):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            mine.close()
            try:
                serve(theirs)
            finally:
                os._exit(0)
        theirs.close()
        self.sock, self.pid = mine, pid

    def spawn(self, kind: str, program: str, limits: dict, uid: int | None, cwd: str, fds: list[int]) -> int:
        _send(self.sock, {"op": "spawn", "kind": kind, "program": program, "limits": limits, "uid": uid,
                          "cwd": cwd}, fds)
        reply, _ = _recv(self.sock)
        if reply is None or "pid" not in reply:
            raise OSError(f"forker could not start the candidate: {reply}")
        return reply["pid"]

    def alive(self) -> bool:
        try:
            return os.waitpid(self.pid, os.WNOHANG)[0] == 0
        except ChildProcessError:   # already reaped (by reap_orphans): gone
            return False

    def send_batch(self, jobs: list[dict]) -> None:
        """Start a batch of run_job jobs; read their replies, in order, with next_reply()."""
        _send(self.sock, {"op": "batch", "jobs": jobs})

    def next_reply(self) -> dict:
        reply, _ = _recv(self.sock)
        if type(reply) is not dict:
            raise OSError("forker died")
        return reply

    def reap(self, pid: int) -> int | None:
        _send(self.sock, {"op": "reap", "pid": pid})
        reply, _ = _recv(self.sock)
        return None if reply is None else reply["status"]
