"""Code that runs inside sandboxed children. Nothing here decides a verdict; it only reports plain data.

fd 3 is the child's report channel. A candidate process ("A") can write anything there, but what it writes is
only ever read as plain data (an answer or a call result), so forging the channel gains nothing the candidate
could not get by returning a value. Judges ("B": p3's sat, the asserts tests) run in separate fresh processes
under a different uid, never share a process with candidate code, and see candidate results only as plain data.
"""

from __future__ import annotations

import builtins
import os
import sys
import typing

from distill_ray.verify.codec import NotPlainData, frame, from_plain, loads_ours, read_msg, to_plain, write_msg

REPORT_FD, REQUEST_FD, RESPONSE_FD = 3, 4, 5
ENTRY = {"p3": "sol", "gsm8k": "solution"}


def namespace(name: str) -> dict:
    """A fresh namespace for a program. (P3 convention: sol/sat may name List without importing it.)"""
    return {"__name__": name, "__builtins__": builtins, "List": typing.List}


def _describe(exc: BaseException) -> list:
    """[type name, message] of an exception, robust to a hostile __str__."""
    try:
        msg = str(exc)[:200]
    except BaseException:
        msg = "<unprintable>"
    return [type(exc).__name__, msg]


PRECOMPILE_MAX_CHARS = 1 << 16


def precompile(program: str):
    """The candidate's code object, compiled in the forker before its zygote forks (see batch.py), or None.

    Compiling runs none of the program, and in a freshly forked child it is the costliest step (~180 copied
    pages); in the forker it is nearly free. Big sources (whose compile time and memory would be unbounded
    there) and sources that do not compile are left to the child, which compiles within its limits as before.
    """
    if len(program) > PRECOMPILE_MAX_CHARS:
        return None
    try:
        return compile(program, "<candidate>", "exec")   # same module, same flags as run_candidate's compile
    except Exception:   # SyntaxError, ValueError, RecursionError, MemoryError: the child reports it
        return None


def run_candidate(kind: str, program: str, code=None) -> None:
    """A for p3/gsm8k: run the program, call sol()/solution(), report {"ok": plain answer} or {"err": [...]}."""
    write_msg(REPORT_FD, candidate_report(kind, program, code))


def candidate_report(kind: str, program: str, code=None) -> dict:
    """run_candidate's message. (int_max_str_digits=0 is the worker's interpreter setting, inherited by forks.)"""
    value, err = candidate_value(kind, program, code)
    return err if value is None else plain_report(value[0])


def candidate_value(kind: str, program: str, code=None) -> tuple[list | None, dict | None]:
    """Run the program and call sol()/solution(): ([its value], None), or (None, the {"err": [...]} message)."""
    try:
        ns = namespace("__candidate__")
        exec(code if code is not None else compile(program, "<candidate>", "exec"), ns)
        fn = ns.get(ENTRY[kind])
        if not callable(fn):
            return None, {"err": ["NameError", f"the program defines no {ENTRY[kind]}()"]}
        return [fn()], None
    except BaseException as e:   # SystemExit, KeyboardInterrupt and MemoryError included: all end as no answer
        return None, {"err": _describe(e)}


def plain_report(value) -> dict:
    """{"ok": the value as plain data}, or the {"err": [...]} saying why it is not."""
    try:
        return {"ok": to_plain(value)}
    except NotPlainData as e:
        return {"err": ["NotPlainData", str(e)]}
    except BaseException as e:
        return {"err": _describe(e)}


def report_value(value) -> None:
    """plain_report written to the report channel (where the C helper leaves a value to Python)."""
    write_msg(REPORT_FD, plain_report(value))


def warm_up() -> None:
    """Run the candidate's own code path (on a trusted sample, no candidate code) in the process that forks them.

    Lookups the interpreter caches (the type attribute cache, specialised bytecode) are then already filled in
    the memory candidates inherit, instead of being written, i.e. copied, in every candidate.
    """
    sample = "def sol():\n    return [1, 'a', 2.5, None, True, (1,), {1: [2]}]\nsolution = sol\n"
    code = compile(sample, "<candidate>", "exec")
    for _ in range(20):
        frame(candidate_report("p3", sample, code))
        frame(candidate_report("gsm8k", sample, code))


def _export(name: str, value):
    """How trusted test code may refer to a name from the candidate's namespace (None: not exported)."""
    if isinstance(value, type(sys)):
        return ["m", value.__name__]           # tests get the real module, never the candidate's copy
    if type(value).__name__ == "function" or (isinstance(value, type) and value.__module__ == "__candidate__"):
        return ["f"]                           # candidate code: a stub in the judge calls it over the pipe
    if callable(value):
        mod, qual = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
        if type(mod) is str and type(qual) is str:
            return ["r", mod, qual]            # e.g. `from math import sqrt`: the judge imports the real one
        return None
    try:
        return ["v", to_plain(value)]
    except (NotPlainData, RecursionError):
        return None


def serve_candidate(program: str) -> None:
    """A for asserts: run the program, export its names, then answer call requests until the judge hangs up."""
    sys.set_int_max_str_digits(0)
    try:
        ns = namespace("__candidate__")
        exec(compile(program, "<candidate>", "exec"), ns)
        names = {k: spec for k, v in list(ns.items()) if not k.startswith("__") and (spec := _export(k, v))}
        write_msg(REPORT_FD, {"names": names})
    except BaseException as e:
        write_msg(REPORT_FD, {"err": _describe(e)})
        return
    while (req := read_msg(REQUEST_FD)) is not None:
        try:
            result = ns[req["f"]](*from_plain(req["a"]), **from_plain(req["k"]))
            reply = {"ok": to_plain(result)}
        except BaseException as e:
            reply = {"exc": _describe(e)}
        write_msg(REPORT_FD, reply)


def judge_sat(sat: str, answer, code=None) -> None:
    """B for p3: rebuild nothing from the candidate but plain data; report whether sat(answer) is True.

    code: sat's code object compiled by the forker (precompile_sat), else compiled here."""
    write_msg(REPORT_FD, sat_report(code if code is not None else compile_sat(sat), answer))


def judge_request(sat: str, code=None) -> None:
    """B for p3, forked (by the zygote) before the answer exists: read it from the forker, then judge_sat."""
    req = read_msg(REQUEST_FD, loads=loads_ours)   # written by the forker
    if type(req) is dict and "answer" in req:
        judge_sat(sat, req["answer"], code)


def precompile_sat(sat: str):
    """sat's code object (or compile_sat's {"invalid": ...} report), compiled in the forker; None for big sources,
    which the judge compiles within its own limits (as precompile does for candidates)."""
    if len(sat) > PRECOMPILE_MAX_CHARS:
        return None
    try:
        return compile_sat(sat)
    except Exception:   # RecursionError, MemoryError: the judge reports it
        return None


def compile_sat(sat: str):
    """sat's code object, or the {"invalid": reason} report when it does not compile."""
    try:
        return compile(sat, "<sat>", "exec")
    except BaseException as e:
        return {"invalid": "sat does not compile/run: %s: %s" % tuple(_describe(e))}


def sat_report(code, answer) -> dict:
    """Run sat's module code in a fresh namespace, then sat on a fresh object rebuilt from plain data."""
    if type(code) is dict:
        return code
    try:
        ns = namespace("__puzzle__")
        exec(code, ns)
        sat_fn = ns.get("sat")
        if not callable(sat_fn):
            return {"invalid": "sat source defines no sat()"}
    except OutOfCpu:
        raise
    except BaseException as e:
        return {"invalid": "sat does not compile/run: %s: %s" % tuple(_describe(e))}
    try:
        result = sat_fn(from_plain(answer))
        return {"sat": result is True, "type": type(result).__name__}
    except OutOfCpu:
        raise
    except BaseException as e:
        return {"raised": _describe(e)}


class OutOfCpu(BaseException):
    """The persistent judge's call ran out of its CPU budget (serve_sat's ITIMER_PROF)."""


def _out_of_cpu(signum, frame):
    raise OutOfCpu()


def serve_sat(cpu_budget_s: float) -> None:
    """The persistent judge (see judge.py): trusted sat sources and plain answers in, reports out, until EOF.

    Code objects are cached by source (they are immutable); every call gets a fresh namespace and a fresh
    answer object. Each call may use its request's "cpu" seconds of CPU time (default cpu_budget_s): a CPU timer
    (ITIMER_PROF, this process's user + system time) armed per call ends it with the report {"cpu_out": true}
    (trusted sats do not catch a BaseException; one stuck in C code is ended by the worker's wall-clock cap).
    """
    import signal
    sys.set_int_max_str_digits(0)
    signal.signal(signal.SIGPROF, _out_of_cpu)
    codes: dict = {}
    for req in _requests(REQUEST_FD):
        if len(codes) > 256:
            codes.clear()
        try:
            signal.setitimer(signal.ITIMER_PROF, float(req.get("cpu", cpu_budget_s)))
            code = codes.get(req["sat"]) or codes.setdefault(req["sat"], compile_sat(req["sat"]))
            report = sat_report(code, req["answer"])
            signal.setitimer(signal.ITIMER_PROF, 0)
        except OutOfCpu:   # (one-shot: it fires once per arming)
            signal.setitimer(signal.ITIMER_PROF, 0)
            report = {"cpu_out": True}
        write_msg(REPORT_FD, report)   # each report at once: the worker times each call


def _requests(fd: int):
    """The persistent judge's requests, framed as codec.frame: several arrive per write, so read them in bulk."""
    buf = bytearray()
    while True:
        while len(buf) >= 4 and len(buf) >= 4 + (n := int.from_bytes(buf[:4], "big")):
            body = bytes(buf[4:4 + n])
            del buf[:4 + n]
            yield loads_ours(body)   # written by the worker
        data = os.read(fd, 1 << 16)
        if not data:
            return
        buf += data


class CandidateGone(BaseException):
    """The candidate process died or sent garbage; a BaseException so `except Exception` in tests can't hide it."""


class HarnessLimit(BaseException):
    """A call the pipe cannot carry (an argument that is not plain data)."""


def judge_tests(tests: str, entry_point: str, max_bytes: int) -> None:
    """B for asserts: run trusted-side test code where candidate names are stubs calling over the pipe."""
    sys.set_int_max_str_digits(0)
    try:
        hello = read_msg(RESPONSE_FD, max_bytes)
    except (ValueError, RecursionError):
        hello = None
    if type(hello) is not dict or type(hello.get("names")) is not dict:
        err = hello.get("err") if type(hello) is dict else None
        write_msg(REPORT_FD, {"cand_err": err if type(err) is list else None})
        return
    state = {"gone": False}
    ns = {"__name__": "__main__", "__builtins__": builtins}
    for name, spec in hello["names"].items():
        if hasattr(builtins, name) and name != entry_point:
            continue   # the tests' `len`, `abs`, `AssertionError` ... stay the real builtins
        value = _import_spec(name, spec, state, max_bytes)
        if value is not None:
            ns[name] = value
    try:
        exec(compile(tests, "<tests>", "exec"), ns)
        if entry_point:
            if entry_point not in ns or hello["names"].get(entry_point) != ["f"]:
                write_msg(REPORT_FD, {"cand_err": ["NameError", f"the program defines no function {entry_point}"]})
                return
            # HumanEval style; plain assert lines just name the entry point (which may itself be called check).
            if callable(ns.get("check")) and entry_point != "check":
                ns["check"](ns[entry_point])
        report = {"ok": True}
    except CandidateGone:
        report = {"gone": True}
    except HarnessLimit as e:
        report = {"harness": str(e)}
    except BaseException as e:
        report = {"fail": _describe(e)}
    if state["gone"]:
        report = {"gone": True}
    write_msg(REPORT_FD, report)


def _import_spec(name: str, spec, state: dict, max_bytes: int):
    import importlib
    try:
        if type(spec) is not list or not spec:
            return None
        if spec[0] == "f":
            return _stub(name, state, max_bytes)
        if spec[0] == "v":
            return from_plain(spec[1])
        module = importlib.import_module(spec[1])
        if spec[0] == "m":
            return module
        value = module
        for part in spec[2].split("."):
            value = getattr(value, part)
        return value
    except Exception:
        return None


_EXCEPTIONS = {n: v for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, Exception)}


def _stub(name: str, state: dict, max_bytes: int):
    def call(*args, **kwargs):
        if state["gone"]:
            raise CandidateGone()
        try:
            request = {"f": name, "a": to_plain(list(args)), "k": to_plain(kwargs)}
        except NotPlainData as e:
            raise HarnessLimit(f"argument of {name}() cannot cross the sandbox: {e}") from None
        try:
            write_msg(REQUEST_FD, request)
            reply = read_msg(RESPONSE_FD, max_bytes)
            if reply is None:
                raise ValueError("no reply")
            if "ok" in reply:
                return from_plain(reply["ok"])
            exc_name, msg = reply["exc"]
        except (OSError, ValueError, KeyError, TypeError):
            state["gone"] = True
            raise CandidateGone() from None
        if exc_name == "NotPlainData":
            raise TypeError(f"{name}() returned something that is not plain data: {msg}")
        try:   # re-raise builtin exception types as themselves, so `except ValueError` in tests works
            exc = _EXCEPTIONS[exc_name](msg)
        except Exception:
            exc = RuntimeError(f"{exc_name}: {msg}")
        raise exc
    call.__name__ = call.__qualname__ = name
    return call
