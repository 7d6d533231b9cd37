"""The persistent sat judge: one long-lived sandboxed process per worker for p3 checks whose `sat` is trusted.

A trusted `sat` (from P3, our procedural puzzles, any curated source: `Check.trusted_sat`) is not hostile, so it
need not run in a fresh process per check; the candidate's answer still is. The judge therefore:

- is forked by the worker (never by the forker, never from candidate code) and runs as its own sandbox uid
  (not the candidates', not the fresh judges'), non-dumpable, with the usual rlimits, so no candidate can
  signal, ptrace or read it;
- receives only a sat source and the answer as plain data (`codec`), rebuilds fresh builtin objects from it
  and runs sat in a fresh namespace per call;
- gets a CPU budget per call (the check's timeout_s, a CPU timer the judge arms itself per call: that call is a
  timeout, the judge goes on) and a wall-clock cap per call (budget.wall_cap); when a call runs past the cap, or
  the process dies or answers garbage, it is SIGKILLed and a fresh one serves the next call.

Requests are pipelined and batched: the worker queues answers as the forker streams them back, sends what is
queued in one write (flush) and collects the reports later, so the judge wakes up once for several calls and
one pipe round trip does not wait for the next candidate.
"""

from __future__ import annotations

import os
import time

from distill_ray.verify import children, sandbox
from distill_ray.verify.budget import wall_cap
from distill_ray.verify.codec import FrameBuffer, frame

CPU_UNLIMITED = 1 << 30   # the judge's RLIMIT_CPU; it times each call's CPU itself (see children.serve_sat)
MAX_CALLS = 20_000        # recycle the process now and then: no state grows without bound, whatever sat does
MAX_IN_FLIGHT = 32        # bounded pipelining: replies (<= ~300 bytes) never fill the 64 KiB reply pipe
PIPE_BUDGET = 32 << 10    # request bytes sent and unanswered, at most (the pipe holds 64 KiB; see flush)


class SatJudge:
    """The worker's handle on its persistent judge; started on first use."""

    def __init__(self, limits: dict, uid: int | None):
        self.limits, self.uid = limits, uid
        self.pid: int | None = None
        self.calls = 0
        self.unsent: list[list] = []      # queued by submit, sent by flush: [key, request frame, wall cap, None]
        self.in_flight: list[list] = []   # sent, unanswered: [key, request frame, wall cap, started_at or None]
        self.done: list[tuple] = []       # (key, report | None, why)

    # -- public

    def submit(self, key, sat: str, plain_answer, timeout_s: float) -> None:
        """Queue sat(answer) with a CPU budget of timeout_s (its wall-clock cap: budget.wall_cap); flush() sends
        it, its (key, report, why) comes back from collect()."""
        self.unsent.append([key, frame({"sat": sat, "answer": plain_answer, "cpu": float(timeout_s)}),
                            wall_cap(timeout_s), None])

    def flush(self) -> None:
        """Send the queued calls, as many per write as fit.

        A blocking write must never wait on a sat that loops (nothing would stop it), so the bytes sent and not yet
        answered stay within PIPE_BUDGET (a bigger call is only sent to an idle judge, which reads it all).
        """
        while self.unsent:
            n = self._fits()
            if n == 0:
                self._wait_one()      # a report (or a timeout) makes room
                continue
            items, self.unsent = self.unsent[:n], self.unsent[n:]
            self.in_flight += items
            if self.pid is None or self.calls >= MAX_CALLS or not self._send(items):
                self._restart()       # (re)sends everything in flight, these items included
            self._read_ready()

    def _fits(self) -> int:
        used = sum(len(item[1]) for item in self.in_flight)
        n = 0
        for item in self.unsent:
            busy = self.in_flight or n   # an idle judge takes any one call
            if len(self.in_flight) + n >= MAX_IN_FLIGHT or (busy and used + len(item[1]) > PIPE_BUDGET):
                break
            used += len(item[1])
            n += 1
        return n

    def collect(self, block: bool) -> list[tuple]:
        """Reports that are in (queued calls are sent first); with block, wait until every call has one."""
        self.flush()
        self._read_ready()
        while block and self.in_flight:
            self._wait_one()
        out, self.done = self.done, []
        return out

    def abandon(self) -> list:
        """Give up every call not yet answered (the judge cannot be run): their keys."""
        keys = [item[0] for item in self.in_flight + self.unsent]
        self.in_flight, self.unsent = [], []
        self.close()
        return keys

    def close(self) -> None:
        self._kill()

    # -- process

    def _restart(self) -> None:
        self._kill()
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        null = os.open(os.devnull, os.O_WRONLY)
        limits = {**self.limits, "cpu_limit": CPU_UNLIMITED}
        budget = float(self.limits["timeout_s"])
        try:
            self.pid = sandbox.fork_sandboxed(lambda: children.serve_sat(budget), limits, self.uid, sandbox.root_fd(),
                                              {children.REPORT_FD: rep_w, children.REQUEST_FD: req_r,
                                               1: null, 2: null}, judge=True)
        except BaseException:
            os.close(req_w)
            os.close(rep_r)
            raise
        finally:
            for fd in (req_r, rep_w, null):
                os.close(fd)
        self.req, self.rep = req_w, rep_r
        os.set_blocking(self.rep, False)
        self.reader = FrameBuffer(1 << 20)
        self.calls = 0
        for item in self.in_flight:    # calls the dead judge never answered go to the fresh one
            item[3] = None
        self._send(self.in_flight)     # if it died at once: noticed (EOF) by _wait_one

    def _kill(self) -> None:
        if self.pid is None:
            return
        sandbox.kill_group(self.pid)
        sandbox.kill_uid(self.uid)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:      # already reaped by the worker's reap_orphans
            pass
        os.close(self.req)
        os.close(self.rep)
        self.pid = None

    def _send(self, items: list) -> bool:
        try:
            view = memoryview(b"".join(item[1] for item in items))
            while view:
                view = view[os.write(self.req, view):]
        except OSError:                # BrokenPipeError: the judge is gone
            return False
        self.calls += len(items)
        return True

    # -- replies

    def _read_ready(self) -> bool:
        """Take in whatever replies are readable; False at EOF or on garbage (the judge must be replaced)."""
        while self.in_flight:
            head = self.in_flight[0]
            if head[3] is None:
                head[3] = time.monotonic()   # its clock starts when the call before it has finished
            try:
                data = os.read(self.rep, 1 << 16)
            except BlockingIOError:
                return True
            if not data:
                return False
            self.reader.buf += data
            if not self._parse():
                return False
        return True

    def _parse(self) -> bool:
        while self.in_flight:
            try:
                done, msg = self.reader.feed(b"")
            except ValueError:
                return False
            if not done:
                return True
            size = 4 + int.from_bytes(self.reader.buf[:4], "big")
            del self.reader.buf[:size]
            key = self.in_flight.pop(0)[0]
            self.done.append((key, msg if type(msg) is dict else None, "ok"))
            if self.in_flight:
                self.in_flight[0][3] = time.monotonic()
        return True

    def _wait_one(self) -> None:
        """Wait for the oldest call's report; on its deadline, EOF or garbage, fail it and replace the judge."""
        n = len(self.in_flight)
        while len(self.in_flight) == n:
            head = self.in_flight[0]
            if head[3] is None:
                head[3] = time.monotonic()
            left = head[3] + head[2] - time.monotonic()
            if left > 0 and sandbox.readable([self.rep], left):
                if self._read_ready():
                    continue
                why = "eof"
            elif left > 0:
                continue
            else:
                why = "timeout"
            self.in_flight.pop(0)
            self.done.append((head[0], None, why))
            self._restart() if self.in_flight else self._kill()
