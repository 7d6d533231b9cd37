"""Optional C helper for the zygote's fork loop (batch.py) and sandbox entry; without a C compiler, pure Python.

Why: after each fork every page either process writes is copied. The zygote's Python loop writes ~50 pages per
fork (frames, reference counts, ctypes' call machinery); as C it writes ~10, and the zygote's CPU per trivial
check fell from ~0.30-0.36 to ~0.22-0.25 ms (whole check: 1.44-1.50 -> 1.24-1.41 ms, measured A/B interleaved).
The candidate enters its sandbox in C too and returns to Python only to run its program (that saves it little:
the pages Python's sandbox entry writes are mostly ones the program's run writes anyway).

What it does is `batch._zygote` + `sandbox.enter` step for step (same syscalls, same order, same wire format); a
candidate whose sandbox entry fails exits with status 70 before any Python runs, as in `sandbox.fork_planned`.
`fork_enter` is fork + `sandbox.enter` alone, for the other sandboxed forks (judges) where the plan allows it.
Set DISTILL_RAY_VERIFY_NATIVE=0 to use the pure-Python path.

The shared object is built once per source version into a private cache dir (mode 0700, owned by us: nobody
else can plant a library there that a root worker would load).
"""

from __future__ import annotations

import ctypes
import os

SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Sandbox entry of one candidate, from its plan (see zygote_loop). Returns 0, or -1 if a step failed. */
static int enter(const long long *p) {
    int cwd = (int)p[0], ndup = (int)p[1];
    const long long *d = p + 2;
    if (setpgid(0, 0) != 0 || fchdir(cwd) != 0) return -1;
    for (int k = 0; k < ndup; k++)                     /* (target, source) pairs; no source is a target */
        if (dup2((int)d[2 * k + 1], (int)d[2 * k]) < 0) return -1;
    const long long *r = d + 2 * ndup;
    int top = (int)r[0], fd_limit = (int)r[1], nrl = (int)r[2];
    if (top < fd_limit && syscall(SYS_close_range, (unsigned)top, (unsigned)(fd_limit - 1), 0) != 0) {
        for (int fd = top; fd < fd_limit; fd++) close(fd);   /* kernels before 5.9 */
    }
    const long long *l = r + 3;
    for (int k = 0; k < nrl; k++) {
        struct rlimit rl = {(rlim_t)l[3 * k + 1], (rlim_t)l[3 * k + 2]};
        if (setrlimit((int)l[3 * k], &rl) != 0) return -1;
    }
    long long uid = l[3 * nrl], judge = l[3 * nrl + 1];
    if (uid >= 0) {
        if (setresgid((gid_t)uid, (gid_t)uid, (gid_t)uid) != 0) return -1;
        if (setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0) return -1;
    }
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return -1;   /* after setuid, which clears it */
    if (judge && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return -1;
    return 0;
}

/* fork + enter: 0 in the child (sandboxed; a failed step exits it with status 70), the pid in the parent, or -1. */
int fork_enter(const long long *plan) {
    pid_t pid = fork();
    if (pid == 0 && enter(plan) != 0) _exit(70);
    return pid;
}

static int put(int fd, int32_t v) { return write(fd, &v, 4) == 4 ? 0 : -1; }   /* batch._INT: "<i" */

static int expect(int fd, char want) { char c; return read(fd, &c, 1) == 1 && c == want ? 0 : -1; }

/* Fork the process planned at plan; report its pid; on "r" reap it and report its wait status.
   Returns 0 in the child (sandboxed), 1 in the zygote to go on, -1 to stop. */
static int serve(const long long *plan, const int *closes, int nclose, int ctl_r, int info_w) {
    pid_t pid = fork();
    if (pid == 0) {
        if (enter(plan) != 0) _exit(70);
        return 0;
    }
    for (int k = 0; k < nclose; k++) close(closes[k]);
    if (put(info_w, pid > 0 ? pid : -1) != 0) return -1;
    if (pid > 0) {
        int status = 0;
        if (expect(ctl_r, 'r') != 0) return -1;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        if (put(info_w, status) != 0) return -1;
    }
    return 1;
}

/* The zygote's loop over n candidates (batch._zygote): plans[offsets[i]...] is candidate i's plan, closes[2i],
   closes[2i+1] the pipe ends the zygote gives up once it is forked; where judge_offsets[i] >= 0, candidate i has
   an untrusted sat whose fresh judge (plan at judge_offsets[i], pipe ends judge_closes[3i..3i+2]) is forked on
   the forker's "j". Returns i in candidate i's process, n + i in its judge's (both sandboxed), -1 in the
   zygote when done or when the forker stopped the loop. */
int zygote_loop(int n, const long long *plans, const int *offsets, const int *closes, const int *judge_offsets,
                const int *judge_closes, int ctl_r, int info_w) {
    for (int i = 0; i < n; i++) {
        int r = serve(plans + offsets[i], closes + 2 * i, 2, ctl_r, info_w);
        if (r <= 0) return r == 0 ? i : -1;
        char c;
        if (read(ctl_r, &c, 1) != 1) return -1;
        if (c == 'j' && judge_offsets[i] >= 0) {
            r = serve(plans + judge_offsets[i], judge_closes + 3 * i, 3, ctl_r, info_w);
            if (r <= 0) return r == 0 ? n + i : -1;
            if (read(ctl_r, &c, 1) != 1) return -1;
        }
        if (c != 'n') return -1;
    }
    return -1;
}
"""


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
    path = os.path.join(cache, f"zygote-{hashlib.sha256(SOURCE.encode()).hexdigest()[:16]}.so")
    if os.path.exists(path):
        return path if _owned_and_private(path) else None
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    work = tempfile.mkdtemp(dir=cache)
    try:
        src, out = os.path.join(work, "zygote.c"), os.path.join(work, "zygote.so")
        with open(src, "w") as f:
            f.write(SOURCE)
        done = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", out, src], capture_output=True, timeout=60)
        if done.returncode != 0:
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
    """The loaded helper: zygote_loop and fork_enter (ctypes, called with the GIL held, like os.fork)."""

    def __init__(self, lib):
        self.zygote_loop, self.fork_enter = lib.zygote_loop, lib.fork_enter
        self.zygote_loop.restype = self.fork_enter.restype = ctypes.c_int


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
