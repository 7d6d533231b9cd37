"""The watching zygote skips the uid-wide kill where a check left no process (zygote.c: kill_and_reap). Whatever
a check leaves, in whatever state, the next check of the same uid (same batch, next batch) must find no other
task of its uid: it asks the kernel itself, as zygote.c's prober does (with RLIMIT_NPROC at 2, a fork fails iff
another task of the uid exists: zombies, dying ones and ones it cannot see in /proc included)."""

from __future__ import annotations

import os
import textwrap
import time

import pytest

from distill_ray.verify import Check, SandboxLimits, Verifier
from tests.verify.procs import processes, sandbox_uids

ALONE = """
import resource
def solution():
    resource.setrlimit(resource.RLIMIT_NPROC, (2, resource.getrlimit(resource.RLIMIT_NPROC)[1]))
    try:
        pid = os.fork()
    except BlockingIOError:   # EAGAIN: another task of the uid exists
        return 1
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return 0
"""

# The candidate lets a child of its own, in a session of its own, trace it (PTRACE_SEIZE: it is not stopped): once
# killed, its zombie is then visible to that tracer only, and only the uid-wide kill hands it back to the zygote.
TRACED = """
import ctypes
def solution():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(4, 1, 0, 0, 0)            # PR_SET_DUMPABLE: a process of the same uid may trace us
    libc.prctl(0x59616d61, -1, 0, 0, 0)  # PR_SET_PTRACER_ANY, where Yama restricts ptrace
    me = os.getpid()
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        ok = libc.ptrace(0x4206, me, 0, 0) == 0   # PTRACE_SEIZE
        os.write(w, b"1" if ok else b"0")
        time.sleep(1000)   # never waits for its tracee: the zombie stays held
    return int(os.read(r, 1))
import time
"""

# A child in a session of its own, not in the candidate's process group, that outlives the candidate.
LEAVE_A_DAEMON = """
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        import time
        time.sleep(1000)
    os._exit(0)
os.wait()
"""
DAEMON = "def solution():\n" + textwrap.indent(LEAVE_A_DAEMON.strip() + "\nreturn 1\n", "    ")

# A child that has exited but that the candidate never reaps: a zombie, reparented to the zygote.
ZOMBIE = """
def solution():
    if os.fork() == 0:
        os._exit(0)
    import time
    time.sleep(0.05)
    return 1
"""


def _check(path: str, body: str, expected) -> Check:
    """`def solution(): ...` as the check of a path: "gsm8k" and "trusted" (p3, trusted sat) run in the watching
    zygote, "untrusted" (p3, a fresh judge per check) in the zygote loop that the forker watches."""
    program = "import os\n" + body.strip() + "\n"
    if path == "gsm8k":
        return Check("gsm8k", program, expected=expected)
    sat = f"def sat(x: int):\n    return x == {expected}\n"
    return Check("p3", program + "sol = solution\n", sat=sat, ans_type="int", trusted_sat=path == "trusted")


def _needs_root(v: Verifier) -> None:
    if not v.protections["uid_drop"].startswith("on"):
        pytest.skip(v.protections["uid_drop"])


def _hostile_then_probes(hostile: Check, probe: Check) -> tuple[list, list, bool]:
    """Verdicts of the probes, of the hostile checks, and whether the Verifier kept the worker it started: a zygote
    that blocked on a zombie its uid-wide kill did not free would stop answering, and the worker would give its
    forker up (``ForkerClient.next_reply``) and be replaced (``Verifier._replace``)."""
    with Verifier(SandboxLimits(timeout_s=2), workers=1) as v:
        _needs_root(v)
        started = [w.proc.pid for w in v._workers]
        first = v.verify([probe, hostile, probe, hostile, hostile, probe])
        second = v.verify([probe])
        kept = [w.proc.pid for w in v._workers] == started
    return [first[0], first[2], first[5], second[0]], [first[1], first[3], first[4]], kept


@pytest.mark.parametrize("path", ["gsm8k", "trusted", "untrusted"])
@pytest.mark.parametrize("leave", ["traced", "daemon", "zombie"])
def test_next_check_finds_no_process_of_its_uid(leave, path):
    body = {"traced": TRACED, "daemon": DAEMON, "zombie": ZOMBIE}[leave]
    probes, hostile, kept_its_worker = _hostile_then_probes(_check(path, body, 1), _check(path, ALONE, 0))
    assert all(p.passed for p in probes), (probes, hostile)
    assert kept_its_worker   # the zygote never blocked on a held zombie
    if leave == "traced" and all(x.status == "fail" for x in hostile):
        pytest.skip("ptrace is not permitted here: no tracer was attached")
    assert all(x.passed for x in hostile), hostile


def _sat(body: str) -> str:
    """A sat (untrusted: a fresh judge per check, as the judge uid) whose body returns True or False."""
    return "import os\ndef sat(x: int):\n" + "".join("    " + line + "\n" for line in body.strip().splitlines())


SAT_ALONE = """
import resource
resource.setrlimit(resource.RLIMIT_NPROC, (2, resource.getrlimit(resource.RLIMIT_NPROC)[1]))
try:
    pid = os.fork()
except BlockingIOError:
    return False
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
return x == 1
"""
SAT_DAEMON = LEAVE_A_DAEMON.strip() + "\nreturn x == 1\n"


def test_next_sat_finds_no_process_of_the_judge_uid():
    """The same for untrusted sats, which run as the judge uid in fresh judges that the zygote forks."""
    sol = "def sol():\n    return 1\n"
    hostile, probe = Check("p3", sol, sat=_sat(SAT_DAEMON), ans_type="int"), Check("p3", sol, sat=_sat(SAT_ALONE),
                                                                                   ans_type="int")
    probes, hostile, kept_its_worker = _hostile_then_probes(hostile, probe)
    assert all(p.passed for p in probes), (probes, hostile)
    assert kept_its_worker
    assert all(x.passed for x in hostile), hostile


@pytest.mark.parametrize("path", ["gsm8k", "trusted", "untrusted"])
def test_honest_checks_need_no_uid_wide_kill(path):
    """An honest batch ends with no process of the uid left (the fast path's premise), and its verdicts stand."""
    with Verifier(SandboxLimits(timeout_s=5), workers=1) as v:
        _needs_root(v)
        out = v.verify([_check(path, "def solution():\n    return 42", 42)] * 20 + [_check(path, ALONE, 0)])
    assert all(x.passed for x in out), out


# ------------------------------------------------------------------ nothing left once the Verifier is gone

# Run in a process of its own that makes itself a subreaper (as a container's init or a supervisor does): whatever
# the verifier's processes orphan comes back to it, not to init. Its last atexit hook (registered first) prints
# the children it still has once the Verifier is gone: closed, its workers killed from outside first, or left
# to the interpreter's exit.
LEFT_BEHIND = r"""
import atexit, ctypes, json, os, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER


@atexit.register
def _children_left():   # runs last (registered first): after the Verifier's own atexit close
    left = []
    for tid in os.listdir("/proc/self/task"):
        for pid in open(f"/proc/self/task/{tid}/children").read().split():
            try:
                state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            left.append([int(pid), state])
    print(json.dumps({"left": left}), flush=True)


from distill_ray.verify import Check, SandboxLimits, Verifier
how, checks = sys.argv[1], [Check(**c) for c in json.loads(sys.argv[2])]
v = Verifier(SandboxLimits(timeout_s=1), workers=2)
workers = [w.proc.pid for w in v._workers]
out = v.verify(checks)
print(json.dumps({"workers": workers, "status": [x.status for x in out]}), flush=True)
if how == "killed":
    for pid in workers:
        os.kill(pid, 9)
if how != "exit":
    v.close()
"""

# A child that outlives the candidate, sleeping, and is still there when the check times out (same group).
SLOW_WITH_CHILD = """
def solution():
    if os.fork() == 0:
        import time
        time.sleep(1000)
    while True:
        pass
"""


def _strays() -> list[dict]:
    """Checks that leave processes behind, in every path: daemons in sessions of their own, zombies, children of
    candidates killed at their timeout, a subprocess, an untrusted sat's daemon."""
    import dataclasses
    checks = [_check(path, body, 1) for path in ("gsm8k", "trusted", "untrusted")
              for body in (DAEMON, ZOMBIE, SLOW_WITH_CHILD)]
    checks += [Check("p3", "def sol():\n    return 1\n", sat=_sat(SAT_DAEMON), ans_type="int"),
               Check("asserts", "import os\n" + DAEMON.strip() + "\n", tests="assert solution() == 1\n"),
               Check("gsm8k", "import subprocess\ndef solution():\n    subprocess.Popen(['sleep', '100'], "
                              "start_new_session=True)\n    return 1\n", expected=1)]
    return [dataclasses.asdict(c) for c in checks]


def _processes_of(workers: list[int]) -> list[tuple]:
    """Every process on the machine that one of these workers started: in its session, or as its sandbox uids."""
    uids = sandbox_uids(workers)
    return [(pid, state, uid) for pid, state, session, uid in processes() if session in workers or uid in uids]


@pytest.mark.parametrize("how", ["closed", "killed", "exit"])
def test_nothing_is_left_once_the_verifier_is_gone(how):
    import json
    import subprocess
    import sys
    if how == "killed" and os.geteuid() != 0:
        pytest.skip("a killed worker's sandbox processes are found by their uids, which need root")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", LEFT_BEHIND, how, json.dumps(_strays())], capture_output=True,
                          text=True, timeout=300, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    ran, left = lines[0], lines[-1]
    assert "timeout" in ran["status"] and "pass" in ran["status"], ran   # the strays were made
    assert left["left"] == [], (how, left)   # no child of the subreaper: not a zombie, not a live one
    found = _processes_of(ran["workers"])
    deadline = time.monotonic() + 5   # a process reparented to init is reaped there: give init a moment
    while found and time.monotonic() < deadline:
        time.sleep(0.1)
        found = _processes_of(ran["workers"])
    assert found == [], (how, found)
