"""The clean forker: a small process that forks candidate processes and has never seen a secret.

A forked child inherits its parent's whole memory, freed heap included. The worker holds expected answers
(gsm8k), test code (asserts) and whole batches of checks, so candidates are not forked from it. The worker
forks this process at start-up, before any check arrives, and afterwards sends it only what a candidate may
see: its own program. Pipe ends travel with the request as SCM_RIGHTS file descriptors.

Ops: "spawn"/"reap" (asserts: the worker talks to the candidate and runs the judge) and "batch" (p3, gsm8k: the
forker runs each candidate start to finish, and an untrusted p3 sat's judge, see batch.py, and streams back the
replies, a few per message).
Batching saves the worker <-> forker round trips per check, which cost as much as the fork on a loaded machine.
The forker parses candidate messages only as JSON and forwards them; it never decides a verdict.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import struct
import time

# The C module, not `socket`: socket.py builds its enums (and imports selectors and array) in the worker, whose
# memory every fork from the forker copies page table entries for (~200 kB and two libraries' mappings more, see
# docs/verify-performance.md). Only socketpair, sendmsg/recvmsg (for SCM_RIGHTS) and plain sends are needed here.
import _socket

from distill_ray.verify import batch, children, records, sandbox

_LEN = struct.Struct(">I")
_RAW = 1 << 31   # set in a message's length: raw bytes, not JSON
_FD = struct.Struct("i")
_MAX_FDS = 8


def _send(sock, obj, fds: list[int] = ()) -> None:
    data = json.dumps(obj).encode()
    if fds:   # socket.send_fds
        sock.sendmsg([_LEN.pack(len(data))],
                     [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, b"".join(_FD.pack(fd) for fd in fds))])
        sock.sendall(data)
    else:
        sock.sendall(_LEN.pack(len(data)) + data)   # one syscall


def _send_records(sock, data: bytes) -> None:
    """Records of the watching zygote (records.py), passed on unread: a message of raw bytes, flagged as such."""
    sock.sendall(_LEN.pack(len(data) | _RAW) + data)


def _recv_fds(sock, size: int) -> tuple[bytes, list[int]]:
    """socket.recv_fds(sock, size, _MAX_FDS)[:2]: up to size bytes and the fds that came with them."""
    head, ancdata, _, _ = sock.recvmsg(size, _socket.CMSG_LEN(_MAX_FDS * _FD.size))
    fds = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += [v for (v,) in _FD.iter_unpack(data[:len(data) - len(data) % _FD.size])]
    return head, fds


def _recv(sock):
    """(message, fds): a JSON message, or the bytes of a raw one; (None, fds) at EOF."""
    head, fds = _recv_fds(sock, _LEN.size)
    if not head:
        return None, []
    while len(head) < _LEN.size:
        head += sock.recv(_LEN.size - len(head))
    (n,) = _LEN.unpack(head)
    raw, n = n & _RAW, n & ~_RAW
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None, fds
        buf += chunk
    return (bytes(buf) if raw else json.loads(buf)), fds


def serve(sock) -> None:
    """Forker main loop: "spawn" forks a sandboxed candidate, "reap" returns its wait status."""
    children.warm_up()
    gc.freeze()   # children then leave these objects alone in their collections: fewer copy-on-write faults
    scratch = None   # made on the first batch, which says the candidate uid
    while True:
        req, fds = _recv(sock)
        if req is None:
            if scratch is not None:
                scratch.close()
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
            if scratch is None and req["jobs"]:
                scratch = batch.Scratch(req["jobs"][0]["uid"], req["jobs"][0]["private_tmp"])
            batch.run_batch(req["jobs"], scratch, lambda replies: _send(sock, replies),
                            lambda data: _send_records(sock, data), sock.fileno())
        elif req["op"] == "reap":
            try:
                _, status = os.waitpid(req["pid"], 0)
            except ChildProcessError:
                status = None
            sandbox.reap_orphans()
            _send(sock, {"status": status})


class ForkerClient:
    """The worker's handle on its forker."""

    def __init__(self):
        mine, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            mine.close()
            try:
                serve(theirs)
            finally:
                os._exit(0)
        theirs.close()
        self.sock, self.pid = mine, pid
        self.replies: list = []   # replies of the current batch received and not yet taken, in reverse order
        self.reply_timeout: float | None = None

    def spawn(self, kind: str, program: str, limits: dict, uid: int | None, cwd: str, fds: list[int]) -> int:
        _send(self.sock, {"op": "spawn", "kind": kind, "program": program, "limits": limits, "uid": uid,
                          "cwd": cwd}, fds)
        reply, _ = _recv(self.sock)
        if reply is None or "pid" not in reply:
            raise OSError(f"forker could not start the candidate: {reply}")
        return reply["pid"]

    def alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            if os.waitpid(self.pid, os.WNOHANG)[0] == 0:
                return True
        except ChildProcessError:   # already reaped (by reap_orphans): gone
            pass
        self.pid = None
        return False

    def send_batch(self, jobs: list[dict], reply_timeout: float | None = None) -> None:
        """Start a batch of run_job jobs; read their replies, in order, with next_reply(), each message within
        reply_timeout seconds (else next_reply raises: the forker stalled)."""
        self.replies = []
        self.reply_timeout = reply_timeout
        _send(self.sock, {"op": "batch", "jobs": jobs})

    def next_reply(self) -> dict:
        if not self.replies:
            self.sock.settimeout(self.reply_timeout)
            try:
                replies, _ = _recv(self.sock)   # a few at a time (batch.Outbox), or records (watching_zygote.py)
            except TimeoutError:
                raise OSError(f"forker sent nothing for {self.reply_timeout:g}s") from None
            finally:
                self.sock.settimeout(None)
            if type(replies) is bytes:
                replies = records.replies(replies)
            if type(replies) is not list or not replies or not all(type(r) is dict for r in replies):
                raise OSError("forker died")
            self.replies = replies[::-1]
        return self.replies.pop()

    def has_reply(self) -> bool:
        """Is a reply already here (next_reply() will not wait)?"""
        return bool(self.replies)

    def reap(self, pid: int) -> int | None:
        try:
            _send(self.sock, {"op": "reap", "pid": pid})
            reply, _ = _recv(self.sock)
        except OSError:
            return None
        return None if reply is None else reply["status"]

    def close(self, grace_s: float) -> None:
        """End the forker and reap it: EOF first (it removes its scratch dir and exits), SIGKILL after grace_s."""
        self.sock.close()
        deadline = time.monotonic() + grace_s
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)   # its zygote and candidates die with it (parent-death signal)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = None
