"""Optional C helper (zygote.c) for the zygotes' fork loops and sandbox entry; without a C compiler, pure Python.

Why: after each fork every page either process writes is copied. The zygote's Python loop writes ~50 pages per
fork (frames, reference counts, ctypes' call machinery); as C it writes ~10 (measurements:
docs/verify-performance.md).

- `zygote_loop` is `batch._zygote` + `sandbox.enter` step for step (same syscalls, same order, same wire format);
  a candidate whose sandbox entry fails exits with status 70 before any Python runs, as in `sandbox.fork_planned`.
- `run_watching_zygote` forks the zygote of watching_zygote.py, which never runs Python, watches its candidates
  itself and calls each candidate's Python body from C (`PyObject_CallNoArgs`, looked up at run time); the forker
  meanwhile passes the zygote's records on to the worker, in C too.
- `fork_enter` is fork + `sandbox.enter` alone, for the other sandboxed forks (judges) where the plan allows it.
- A candidate's small allocations go to memory its zygote reserved untouched (a wrapper around CPython's
  allocator, see zygote.c).
- Built with Python's headers (else without these, and Python does them): a trusted-path candidate's program is
  run and its answer encoded in C (`run_program`, `put_plain`), and random's generator advanced (`random_skip`,
  checked against getrandbits first).
Set DISTILL_RAY_VERIFY_NATIVE=0 to use the pure-Python path.

The shared object is built once per source version into a private cache dir (mode 0700, owned by us: nobody
else can plant a library there that a root worker would load).
"""

from __future__ import annotations

import ctypes
import os


def source() -> str:
    """The helper's C source (zygote.c, beside this file)."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "zygote.c")) as f:
        return f.read()


def build() -> str | None:
    """Path of the compiled helper (built if needed), or None: disabled, no compiler, or the build failed.

    Runs in the Verifier's process (the workers only load the result: their imports are what each fork pays for).
    """
    import hashlib
    import shutil
    import subprocess
    import tempfile
    if os.environ.get("DISTILL_RAY_VERIFY_NATIVE", "1") == "0":
        return None
    cache = _private_dir()
    if cache is None:
        return None
    import sysconfig
    code = source()
    include = sysconfig.get_paths().get("include") or ""
    key = "\0".join([code, include, sysconfig.get_config_var("SOABI") or ""])   # it uses this Python's C API
    path = os.path.join(cache, f"zygote-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so")
    if os.path.exists(path):
        return path if _owned_and_private(path) else None
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    work = tempfile.mkdtemp(dir=cache)
    try:
        src, out = os.path.join(work, "zygote.c"), os.path.join(work, "zygote.so")
        with open(src, "w") as f:
            f.write(code)
        base = [cc, "-O2", "-shared", "-fPIC", "-o", out, src]
        # with Python's headers it also encodes answers (zygote.c: put_plain); without, everything else
        for flags in (["-DWITH_PYTHON_H", f"-I{include}"], []):
            done = subprocess.run(base + flags, capture_output=True, timeout=60)
            if done.returncode == 0:
                break
        else:
            return None
        os.chmod(out, 0o755)   # readable by the sandbox uids, which map it (inherited) but never load it
        os.replace(out, path)  # atomic: concurrent builders each install a complete file
        return path
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _private_dir() -> str | None:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "distill_ray")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return None
    return path if _owned_and_private(path) else None


def _owned_and_private(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022 and not os.path.islink(path)


class Helper:
    """The loaded helper (ctypes, called with the GIL held, like os.fork): zygote_loop and fork_enter (batch.py,
    sandbox.py), run_watching_zygote where candidates can be called from C (watching_zygote.py)."""

    def __init__(self, lib):
        self.zygote_loop, self.fork_enter = lib.zygote_loop, lib.fork_enter
        self.kill_uid = lib.kill_uid_outside   # see zygote.c: a throwaway killer, so we never run as the uid
        self.kill_uid.restype, self.kill_uid.argtypes = ctypes.c_int, [ctypes.c_longlong]
        self.kill_uid_left = lib.kill_uid_left   # the same, and whether the uid had any process left
        self.kill_uid_left.restype, self.kill_uid_left.argtypes = ctypes.c_int, [ctypes.c_longlong]
        self.set_private_ipc = lib.set_private_ipc   # the watching zygote then checks for SysV objects too
        self.set_private_ipc.restype, self.set_private_ipc.argtypes = None, [ctypes.c_int]
        self.run_watching_zygote = lib.run_watching_zygote if lib.direct_calls() else None
        self.encodes_reports = bool(lib.encodes_reports())
        self.zygote_loop.restype = self.fork_enter.restype = ctypes.c_int
        ints, llongs = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_longlong)
        lib.run_watching_zygote.restype = ctypes.c_longlong
        lib.run_watching_zygote.argtypes = [   # (a log address and size do not fit ctypes' default int)
            ctypes.c_int, llongs, ints, ints, ints, llongs, ctypes.c_char_p, llongs, ctypes.c_int,
            ctypes.c_void_p, ctypes.c_longlong, ctypes.POINTER(ctypes.py_object), ctypes.py_object, ctypes.py_object,
            ints, ctypes.c_int, ctypes.c_int, llongs, ints]
        self.skips_random = self.encodes_reports and _random_skip_works(lib)


def _random_skip_works(lib) -> bool:
    """zygote.c's random_skip relies on CPython's layout of a random.Random: use it only where advancing a
    generator with it gives what getrandbits gives (across a refill of the state, too)."""
    import random
    lib.random_skip.argtypes, lib.random_skip.restype = [ctypes.py_object, ctypes.c_int], None
    ours, theirs = random.Random(20261124), random.Random(20261124)
    lib.random_skip(ours, 700)
    theirs.getrandbits(32 * 700)
    return ours.getrandbits(64) == theirs.getrandbits(64) and ours.random() == theirs.random()


def load(path: str | None) -> Helper | None:
    if not path:
        return None
    try:
        return Helper(ctypes.PyDLL(path, use_errno=True))
    except (OSError, AttributeError):
        return None


def plan_array(flat: list[int]):
    return (ctypes.c_longlong * len(flat))(*flat)


def arrays(plans: list[list[int]], closes: list[int], judges: list, judge_closes: list[int]) -> tuple:
    """zygote_loop's array arguments from flatten()ed plans: candidates' (plans), judges' (None where there is no
    judge), and the fds the zygote closes after each fork."""
    offsets, judge_offsets, ints = [], [], []
    for p, j in zip(plans, judges):
        offsets.append(len(ints))
        ints += p
        judge_offsets.append(-1 if j is None else len(ints))
        ints += j or []
    ints_t, n_t = ctypes.c_longlong * len(ints), ctypes.c_int * len(offsets)
    return (ints_t(*ints), n_t(*offsets), (ctypes.c_int * len(closes))(*closes), n_t(*judge_offsets),
            (ctypes.c_int * len(judge_closes))(*judge_closes))


def watch_arrays(plans: list[list[int]], closes: list[int], fds: list[int], limits: list[int], paths: list[str],
                 ids: list[int]) -> tuple:
    """run_watching_zygote's first arguments, from flatten()ed plans (see watching_zygote.py)."""
    offsets, ints = [], []
    for p in plans:
        offsets.append(len(ints))
        ints += p
    ints_t, n_t = ctypes.c_longlong * len(ints), ctypes.c_int * len(offsets)
    return (ints_t(*ints), n_t(*offsets), (ctypes.c_int * len(closes))(*closes), (ctypes.c_int * len(fds))(*fds),
            (ctypes.c_longlong * len(limits))(*limits), b"\0".join(p.encode() for p in paths) + b"\0",
            (ctypes.c_longlong * len(ids))(*ids), len(paths))


def flatten(plan: tuple) -> list[int] | None:
    """A sandbox.plan() as the helper's integers, or None where only the Python path applies (a cwd given as a
    path, fds that need juggling, settings a worker did not already inherit)."""
    cwd, fds, simple, top, fd_limit, rlimits, uid, judge = plan[:8]
    if type(cwd) is not int or not simple:
        return None
    out = [cwd, len(fds)]
    for target, src in fds:
        out += [target, src]
    out += [top, fd_limit, len(rlimits)]
    for res, (soft, hard) in rlimits:
        out += [res, soft, hard]
    return out + [-1 if uid is None else uid, 1 if judge else 0]
