"""Running one check inside a worker, and judging its plain-data result in trusted code.

The worker is trusted: it holds the check (expected answers, tests), starts the sandboxed processes, and does the
type checks and comparisons itself on values rebuilt from plain data. No candidate code ever runs here.
"""

from __future__ import annotations

import functools
import math
import os
import re
import signal
import time

from distill_ray.verify import children, sandbox
from distill_ray.verify.budget import wall_cap
from distill_ray.verify.codec import from_plain, safe_text
from distill_ray.verify.judge import SatJudge
from distill_ray.verify.procfs import children_of

ANSWER_CHARS = 1000
DETAIL_CHARS = 300
_SCALAR_TYPES = {"int": int, "str": str, "float": float, "bool": bool}


class Invalid(Exception):
    """The check itself is malformed (not the candidate's fault)."""


class ForkerLost(Exception):
    """The forker died (or stopped answering) while this check ran: it is handed back, not given a verdict."""


YIELD_S = 0.05   # verdicts in hand go to the Verifier at least this often (its watchdog sees progress)


def verdict(status: str, detail: str = "", answer: str | None = None) -> dict:
    """A verdict; its text made UTF-8-safe (safe_text) before it is cut, so the cut text stays within its cap."""
    if answer is not None:
        answer = safe_text(answer)[:ANSWER_CHARS]
    return {"passed": status == "pass", "status": status, "answer": answer, "detail": safe_text(detail)[:DETAIL_CHARS]}


# ---------------------------------------------------------------- answer types (P3's type_check, exact types)

@functools.lru_cache(maxsize=256)   # a batch's checks mostly share their few answer types
def parse_type(text: str):
    """'List[List[int]]' -> ('list', ('list', 'int')); raise Invalid if it is not a P3 answer type."""
    s = text.replace(" ", "")
    if s in _SCALAR_TYPES:
        return s
    m = re.fullmatch(r"(?:typing\.)?(?:List|list)\[(.+)\]", s)
    if not m:
        raise Invalid(f"unsupported answer type {text!r}")
    return ("list", parse_type(m.group(1)))


_TYPE_SETS = {name: frozenset((t,)) for name, t in _SCALAR_TYPES.items()}


def type_ok(value, typ) -> bool:
    if isinstance(typ, str):
        return type(value) is _SCALAR_TYPES[typ]
    if type(value) is not list:
        return False
    if isinstance(typ[1], str):   # List[<scalar>], the usual: every item's exact type, checked in C
        return set(map(type, value)) <= _TYPE_SETS[typ[1]]
    return all(type_ok(v, typ[1]) for v in value)


@functools.lru_cache(maxsize=256)   # the candidates of one puzzle share its sat
def ans_type_of(sat: str) -> str:
    """The annotation of sat's first argument, as P3 writes it."""
    import ast   # here, not at the top: see sandbox.make_private_dir on what each import costs every candidate
    try:
        tree = ast.parse(sat)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        raise Invalid(f"sat does not parse: {type(e).__name__}: {e}") from None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "sat" and node.args.args:
            ann = node.args.args[0].annotation
            if ann is not None:
                return ast.unparse(ann)
    raise Invalid("cannot derive ans_type: sat's first argument has no annotation")


def answer_text(value) -> str:
    """repr(value) capped at ANSWER_CHARS, without turning more of a list or a huge int into text than needed."""
    if type(value) is list and len(value) <= 64 and _small_scalars(value) or _small_scalar(value):
        return repr(value)[:ANSWER_CHARS]   # the common case, 5x faster than the walk below, same text
    out, left = [], [ANSWER_CHARS]

    def put(text: str) -> None:
        out.append(text[:max(left[0], 0)])
        left[0] -= len(text)

    def walk(v) -> None:
        if type(v) is list:
            put("[")
            for i, e in enumerate(v):
                if left[0] <= 0:
                    return
                if i:
                    put(", ")
                walk(e)
            put("]")
        elif type(v) is int and v.bit_length() > 4 * ANSWER_CHARS:   # decimal conversion is quadratic
            put(f"<int of {v.bit_length()} bits: {hex(v)[:ANSWER_CHARS]}>")
        else:
            put(repr(v))

    walk(value)
    return "".join(out)


def _small_scalar(v) -> bool:
    """Is repr(v) cheap and short? (No list, no huge int, no long str.)"""
    t = type(v)
    return t is bool or t is float or v is None or (t is int and v.bit_length() <= 256) or (t is str and len(v) <= 256)


_CHEAP_TYPES = frozenset((bool, float, type(None)))
_INT_ONLY = frozenset((int,))
_SMALL_INT = 1 << 256   # |v| < 2**256 <=> v.bit_length() <= 256


def _small_scalars(values: list) -> bool:
    """all(map(_small_scalar, values)), in C for the usual lists (of ints, or of bools, floats and Nones)."""
    types = set(map(type, values))
    if types <= _CHEAP_TYPES:
        return True
    if types <= _INT_ONLY:
        return -_SMALL_INT < min(values) and max(values) < _SMALL_INT
    return all(map(_small_scalar, values))


def number_text(value) -> str:
    """gsm8k canonical form: 12 and 12.0 -> '12', 2.5 -> '2.5'."""
    if type(value) is float and math.isfinite(value) and value.is_integer():
        return str(int(value))[:ANSWER_CHARS]
    if type(value) is int:   # a huge int as answer_text writes it: its decimal conversion is quadratic
        return str(value) if value.bit_length() <= 4 * ANSWER_CHARS else answer_text(value)
    return answer_text(value)


def gsm8k_judge(value, expected: float | None) -> dict:
    """``expected`` None (a check with ``record_answer``): a finite number is recorded as ``answered``; anything
    else fails without an answer."""
    answer = number_text(value)
    if type(value) not in (int, float):
        return verdict("fail", f"answer is a {type(value).__name__}, not an int or float", None if expected is None else answer)
    if type(value) is float and not math.isfinite(value):
        return verdict("fail", f"answer {value!r} is not finite", None if expected is None else answer)
    if expected is None:
        return verdict("answered", "no expected answer: answer recorded", answer)
    if type(value) is int and float(expected).is_integer():
        equal = value == int(expected)
    else:
        try:
            equal = math.isclose(value, expected, rel_tol=1e-6, abs_tol=1e-6)
        except OverflowError:
            equal = False
    if equal:
        return verdict("pass", "", answer)
    return verdict("fail", f"answer {answer[:100]} != expected {number_text(expected)}", answer)


# ---------------------------------------------------------------- the runner

class CheckRunner:
    """Runs checks one at a time in sandboxed processes and judges them. One per worker."""

    def __init__(self, limits: dict, forker, protections: dict):
        self.limits = limits
        self.forker = forker
        self.private_tmp = protections["private_tmp"].startswith("on")
        root = protections["uid_drop"].startswith("on")
        base = sandbox.UID_BASE + 3 * os.getpid()
        self.cand_uid = base if root else None       # candidate processes ("A")
        self.judge_uid = base + 1 if root else None  # judge processes ("B"): another uid, so A cannot touch B
        # the persistent judge of trusted sats: a uid of its own, so no fresh judge (untrusted sat) reaches it
        self.sat_judge = SatJudge(limits, base + 2 if root else None)
        # once the forker is lost: [why, index of the check it was running, None if unknown, -1 if none]
        self.lost: list | None = None

    def run_many(self, batch: list):
        """Yield lists of (index, verdict) for [index, check] pairs, not necessarily in order.

        p3 and gsm8k checks go to the forker as one batch (it runs each candidate, and an untrusted p3 sat's
        fresh judge, start to finish without a round trip to us); we judge the plain results as they stream
        back, passing well-typed answers of trusted-sat checks on to the persistent judge. Verdicts are yielded
        a few at a time (whatever is ready when the next reply is not), so one message to the Verifier carries
        several. Asserts checks, whose judge must talk to the candidate, run one at a time as before.

        If the forker dies or stalls, the checks it did not answer get no verdict here: self.lost is then set
        (to the index of the check it was running, if known), and the worker hands them back to the Verifier,
        which runs them again on a fresh forker (the one that was running, alone).
        """
        jobs, rest = [], []
        for index, check in batch:
            if check.get("kind") not in ("p3", "gsm8k"):
                rest.append((index, check))
                continue
            limits = self._limits_for(check)
            t0 = time.monotonic()
            try:
                prep = self._prepare(check)
            except Invalid as e:
                yield [(index, {**verdict("invalid", str(e)), "seconds": time.monotonic() - t0 or 1e-9})]
                continue
            except Exception as e:
                yield [(index, {**verdict("error", f"verifier: {type(e).__name__}: {e}"),
                                "seconds": time.monotonic() - t0 or 1e-9})]
                continue
            jobs.append((index, check, limits, prep))
        if jobs:
            yield from self._run_jobs(jobs)
        for index, check in rest:
            if self.lost is not None:
                return
            try:
                yield [(index, self.run(check))]
            except ForkerLost:
                self.lost = ["forker died", index]

    def _run_jobs(self, jobs: list):
        try:
            self.forker.send_batch([{"kind": c["kind"], "program": c["program"], "limits": lim,
                                     "uid": self.cand_uid, "judge_uid": self.judge_uid,
                                     "private_tmp": self.private_tmp,
                                     "sat": c["sat"] if c["kind"] == "p3" and not c.get("trusted_sat") else None,
                                     "ans_type": typ if c["kind"] == "p3" else None}
                                    for _, c, lim, typ in jobs],
                                    reply_timeout=2 * wall_cap(max(lim["timeout_s"] for _, _, lim, _ in jobs)) + 10)
        except OSError:
            self.lost = ["forker died", -1]   # nothing of this batch ran (-1: none of its checks)
        ready, last_yield = [], time.monotonic()
        for index, check, limits, prep in jobs:
            if self.lost is not None:
                break
            try:
                reply = self.forker.next_reply()
            except OSError as e:   # it died, or sent nothing for too long: this check may be why
                self.lost = [str(e), index]
                break
            seconds = float(reply.get("seconds", 0.0)) if type(reply) is dict else 0.0
            base, self.limits = self.limits, limits
            try:
                result = self._judge_reply(check, prep, reply)
                if type(result) is tuple:   # trusted sat: to the persistent judge, verdict comes later
                    self.sat_judge.submit((index, result[0], limits, seconds, time.monotonic()), check["sat"],
                                          result[1], limits["timeout_s"])
                    result = None
            except Exception as e:   # a harness problem, never a pass
                result = verdict("error", f"verifier: {type(e).__name__}: {e}")
            finally:
                self.limits = base
            if result is not None:
                result["seconds"] = seconds
                ready.append((index, result))
            if self.forker.has_reply() and time.monotonic() - last_yield < YIELD_S:
                continue   # more replies in hand: judge them first, then hand the judge and the Verifier theirs
            sandbox.reap_orphans()
            ready += self._sat_judged(block=False)
            if ready:
                yield ready
                ready, last_yield = [], time.monotonic()
        ready += self._sat_judged(block=True)
        if ready:
            yield ready

    def _sat_judged(self, block: bool) -> list:
        """Verdicts of trusted-sat checks whose report came back from the persistent judge."""
        try:
            done = self.sat_judge.collect(block)
        except Exception as e:   # e.g. the judge cannot be forked: every call not answered is an error
            done = [(key, None, f"judge: {type(e).__name__}: {e}") for key in self.sat_judge.abandon()]
        out = []
        for (index, answer, limits, seconds, submitted), report, why in done:
            base, self.limits = self.limits, limits
            try:
                result = self._sat_verdict(report, why, answer)
            finally:
                self.limits = base
            result["seconds"] = seconds + (time.monotonic() - submitted)
            out.append((index, result))
        return out

    def end_sandboxes(self, wait_s: float = 30.0) -> bool:
        """Kill every process left of this worker's sandboxes and reap every child (the worker exits next): True
        once none is left (ECHILD). Whatever a check left comes back to us (the subreaper) as its parents die; each
        round SIGKILLs the sandbox uids and every child we still have (all of them sandbox leftovers by now: the
        forker and the persistent judge are reaped first), until none is left. Killed processes are reaped as they
        finish dying, which on a loaded machine takes a while: the worker must not exit first, or they would end
        as unreaped zombies of the Verifier's process (if it is a subreaper) or live on (not killed yet)."""
        deadline = time.monotonic() + wait_s
        uids = [u for u in (self.cand_uid, self.judge_uid, self.sat_judge.uid) if u is not None]
        while True:
            for uid in uids:
                sandbox.kill_uid(uid)
            for pid in children_of(os.getpid()):
                try:
                    os.kill(pid, signal.SIGKILL)   # our child: its pid cannot be reused before we reap it
                except ProcessLookupError:
                    pass
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    def _limits_for(self, check: dict) -> dict:
        timeout = check.get("timeout_s")
        if timeout is None:
            return self.limits
        cpu = self.limits["cpu_s"] if self.limits["cpu_s"] > 0 else int(timeout) + 2
        return {**self.limits, "timeout_s": float(timeout), "cpu_limit": cpu}

    @staticmethod
    def _prepare(check: dict):
        """Validate what the worker needs before the candidate runs: p3's answer type, gsm8k's expected."""
        if check["kind"] == "p3":
            if not check.get("sat"):
                raise Invalid("p3 check without sat")
            return parse_type(check.get("ans_type") or ans_type_of(check["sat"]))
        expected = check.get("expected")
        if expected is None and check.get("record_answer") is True:
            return None
        if type(expected) not in (int, float) or not math.isfinite(expected):
            raise Invalid("gsm8k check without a finite expected number (or record_answer)")
        return expected

    def _judge_reply(self, check: dict, prep, reply: dict):
        """Judge the plain data the forker sent back for one p3/gsm8k candidate: a verdict, or for a trusted sat
        (answer text, plain answer) of a well-typed answer, for the persistent judge."""
        if type(reply) is not dict or "error" in reply:
            return verdict("error", str(reply.get("error") if type(reply) is dict else "no reply from forker"))
        msg = reply.get("msg")
        if not (type(msg) is dict and "ok" in msg):
            return self._no_answer(msg, reply.get("why"), reply.get("status"), _Tail(reply.get("tail")))
        try:
            value = from_plain(msg["ok"])
        except (ValueError, RecursionError) as e:
            return verdict("error", f"malformed answer: {e}")
        if check["kind"] == "gsm8k":
            return gsm8k_judge(value, prep)
        answer = answer_text(value)
        if not type_ok(value, prep):
            return verdict("fail", f"answer has type {type(value).__name__}, expected {check.get('ans_type') or prep}",
                           answer)
        if check.get("trusted_sat"):
            return answer, msg["ok"]
        report, why = reply.get("judge") or (None, "no judge")
        return self._sat_verdict(report if type(report) is dict else None, why, answer)

    def _sat_verdict(self, report, why, answer) -> dict:
        if report is None:
            if why in ("timeout", "cpu"):
                return verdict("timeout", f"sat timed out ({self._budget_text(why)})", answer)
            return verdict("error", f"sat process ended without a result ({why})", answer)
        if "invalid" in report:
            return verdict("invalid", str(report["invalid"]), answer)
        if report.get("cpu_out") is True:   # the persistent judge's own CPU timer ran out (children.serve_sat)
            return verdict("timeout", f"sat timed out ({self._budget_text('cpu')})", answer)
        if "raised" in report and type(report["raised"]) is list and len(report["raised"]) == 2:
            return verdict("fail", "sat raised %s: %s" % tuple(report["raised"]), answer)
        if report.get("sat") is True:
            return verdict("pass", "", answer)
        return verdict("fail", f"sat returned a {report.get('type')}, not True", answer)

    def run(self, check: dict) -> dict:
        timeout = check.get("timeout_s")
        if timeout is None:
            return self._run(check)
        base = self.limits   # a per-check timeout: wall clock as asked, CPU limit derived the same way
        cpu = base["cpu_s"] if base["cpu_s"] > 0 else int(timeout) + 2
        self.limits = {**base, "timeout_s": float(timeout), "cpu_limit": cpu}
        try:
            return self._run(check)
        finally:
            self.limits = base

    def _run(self, check: dict) -> dict:
        start = time.monotonic()
        scratch = sandbox.make_private_dir()
        try:
            if self.cand_uid is not None:
                os.chown(scratch, self.cand_uid, self.cand_uid)
            os.chmod(scratch, 0o700)
            result = getattr(self, "_" + check["kind"])(check, scratch)
        except Invalid as e:
            result = verdict("invalid", str(e))
        except ForkerLost:
            raise
        except Exception as e:   # a harness problem, never a pass
            result = verdict("error", f"verifier: {type(e).__name__}: {e}")
        finally:
            # every task of the check is gone and reaped before the next one starts (they would count against its
            # RLIMIT_NPROC), then what it left: files, SysV IPC objects
            if not all([sandbox.kill_uid_gone(self.cand_uid), sandbox.kill_uid_gone(self.judge_uid)]):
                result = verdict("error", "verifier: processes of the check could not be ended")
            sandbox.rmtree(scratch)
            if self.private_tmp:
                sandbox.wipe_private_tmp()
            sandbox.clear_ipc()
            sandbox.reap_orphans()
        result["seconds"] = time.monotonic() - start
        return result

    # -- kinds

    def _asserts(self, check: dict, scratch: str) -> dict:
        if not check.get("tests") and not check.get("entry_point"):
            raise Invalid("asserts check without tests")
        req_r, req_w = os.pipe()     # judge -> candidate: calls
        resp_r, resp_w = os.pipe()   # candidate -> judge: names, then results
        out_r, out_w = os.pipe()
        try:
            pid = self.forker.spawn("asserts", check["program"], self.limits, self.cand_uid, scratch,
                                    [resp_w, out_w, req_r])
        except OSError as e:
            for fd in (req_r, req_w, resp_r, resp_w, out_r, out_w):
                os.close(fd)
            if not self.forker.alive():
                raise ForkerLost() from None
            return verdict("error", str(e))
        os.close(resp_w)
        os.close(req_r)
        body = lambda: children.judge_tests(check["tests"], check.get("entry_point", ""),  # noqa: E731
                                            self.limits["max_answer_bytes"])
        try:
            report, why, sink = self._run_judge(body, {children.REQUEST_FD: req_w, children.RESPONSE_FD: resp_r},
                                                out=(out_r, out_w), also_kill=pid)
        finally:
            os.close(req_w)
            os.close(resp_r)
        status = self.forker.reap(pid)
        if status is None and not self.forker.alive():
            raise ForkerLost()
        if report is not None and report.get("ok") is True:
            return verdict("pass")
        if report is not None and "fail" in report:
            return verdict("fail", "%s: %s" % tuple(report["fail"]))
        if report is not None and "harness" in report:
            return verdict("error", report["harness"])
        if why in ("timeout", "cpu"):
            return verdict("timeout", f"timeout ({self._budget_text(why)})")
        err = report.get("cand_err") if report else None
        return self._no_answer({"err": err} if err else None, why, status, sink)

    # -- processes

    def _budget_text(self, why: str) -> str:
        """Which limit ran out: the CPU budget ("cpu"), or the wall-clock cap ("timeout": it slept or waited)."""
        t = self.limits["timeout_s"]
        if why == "cpu":
            return f"used its {t:g}s of CPU time"
        return f"ran {wall_cap(t):g}s of wall clock, the cap for a {t:g}s CPU budget"

    def _no_answer(self, msg, why: str, status, sink) -> dict:
        """Classify a candidate that produced no answer."""
        if type(msg) is dict and type(msg.get("err")) is list and len(msg["err"]) == 2:
            name, text = (str(x) for x in msg["err"])
            if name == "MemoryError":
                return verdict("memory", f"MemoryError (limit {self.limits['memory_mb']} MB)")
            return verdict("error", f"{name}: {text}")
        if why in ("timeout", "cpu"):
            return verdict("timeout", f"timeout ({self._budget_text(why)})")
        if status is not None and os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU:
                return verdict("timeout", f"cpu limit of {self.limits['cpu_limit']}s exceeded")
            if sig == signal.SIGXFSZ:
                return verdict("error", f"file size limit of {self.limits['file_size_mb']} MB exceeded")
            if sig != signal.SIGKILL:
                return verdict("error", f"killed by {signal.Signals(sig).name}: {sink.tail()}")
        if status is not None and os.WIFEXITED(status) and why == "eof":
            return verdict("error", f"exited with code {os.WEXITSTATUS(status)} without an answer")
        return verdict("error", f"no answer ({why})")

    def _run_judge(self, body, fds: dict, out=None, also_kill: int | None = None):
        """Fork B (as the judge uid, from this trusted process), wait for its report, kill everything."""
        rep_r, rep_w = os.pipe()
        out_r, out_w = out if out else os.pipe()
        fds = {children.REPORT_FD: rep_w, 1: out_w, 2: out_w, **fds}
        try:
            pid = sandbox.fork_sandboxed(body, self.limits, self.judge_uid, sandbox.root_fd(), fds, judge=True)
        finally:
            os.close(rep_w)
            os.close(out_w)
        sink = sandbox.OutputSink(out_r, self.limits["max_output_bytes"])
        # CPU budget: B's tree, and A's (also_kill: forked by the forker) where B talks to it (asserts); what they
        # orphan comes back to us, their subreaper (sandbox.tree_cpu)
        first, me = pid if also_kill is None else also_kill, os.getpid()
        try:
            start, budget = time.monotonic(), self.limits["timeout_s"]
            msg, why = sandbox.wait_message(rep_r, sink, start + wall_cap(budget), self.limits["max_answer_bytes"],
                                            (budget, start, lambda: sandbox.tree_cpu(me, first)))
        finally:
            if also_kill is not None:
                self._kill(also_kill, self.cand_uid)
            self._kill(pid, self.judge_uid)
            os.waitpid(pid, 0)
            os.close(rep_r)
            os.close(out_r)
        return (msg if type(msg) is dict else None), why, sink

    @staticmethod
    def _kill(pid: int, uid: int | None) -> None:
        sandbox.kill_group(pid)
        sandbox.kill_uid(uid)


class _Tail:
    """Stands in for an OutputSink whose tail the forker already read."""

    def __init__(self, text):
        self.text = text if type(text) is str else ""

    def tail(self, n: int = 120) -> str:
        return self.text[-n:]
