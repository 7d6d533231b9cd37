"""Issue 17, classes 5 and 6: nothing a check leaves behind reaches the next check, and candidates cannot read
other processes' command lines.

Each test runs a hostile check that leaves some state (a file in a world-writable dir, SysV IPC objects, a POSIX
message queue, extended attributes or times on the reused scratch dir, keys in the uid's keyrings, processes that
hold the uid's task budget), then honest checks of the same worker (same sandbox uid), in the same batch and in
the next one, that look for it: they must find a clean state.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from distill_ray.verify import Check, SandboxLimits, Verifier

TOKEN = f"leak-{os.getpid()}-{os.urandom(4).hex()}"


def _needs_root(v: Verifier) -> None:
    if not v.protections["uid_drop"].startswith("on"):
        pytest.skip(v.protections["uid_drop"])


def _as_kind(kind: str, body: str, expected) -> Check:
    """A program `def solution(): <body>` as a gsm8k check (expected), or as an asserts check of the same."""
    program = "import os\ndef solution():\n" + "".join("    " + line + "\n" for line in body.strip().splitlines())
    if kind == "gsm8k":
        return Check("gsm8k", program, expected=expected)
    return Check("asserts", program, tests=f"assert solution() == {expected!r}\n")


def _hostile_then_probe(hostile: list[Check], probe: Check, timeout_s: float = 5) -> list:
    """Verdicts of the probe after the hostile checks: in the same batch, then alone in the next one."""
    with Verifier(SandboxLimits(timeout_s=timeout_s), workers=1) as v:
        _needs_root(v)
        first = v.verify([probe, *hostile, probe])
        second = v.verify([probe])
    return [first[0], first[-1], second[0]], first[1:-1]


# ------------------------------------------------------------------ 5a. world-writable dirs outside the private tmpfs

def _world_writable_dirs() -> list[str]:
    done = subprocess.run(["find", "/", "-xdev", "-type", "d", "-perm", "-0002"], capture_output=True, text=True,
                          timeout=120)
    dirs = [d for d in done.stdout.splitlines() if d and not d.startswith("/tmp/")]
    return sorted(set(dirs) | {d for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock")
                               if os.path.isdir(d)})


@pytest.mark.parametrize("kind", ["gsm8k", "asserts"])
def test_no_file_outlives_its_check_in_any_world_writable_dir(kind):
    dirs = _world_writable_dirs()
    leave = f"""
made = 0
for d in {dirs!r}:
    try:
        with open(d + "/{TOKEN}", "w") as f:
            f.write("x")
        made += 1
    except OSError:
        pass
return made
"""
    look = f"return sum(os.path.exists(d + '/{TOKEN}') for d in {dirs!r})"
    try:
        probes, _ = _hostile_then_probe([_as_kind(kind, leave, -1)], _as_kind(kind, look, 0))
        assert all(p.passed for p in probes), (dirs, probes)
    finally:
        found = [d for d in dirs if os.path.lexists(f"{d}/{TOKEN}")]
        for d in found:
            try:
                os.unlink(f"{d}/{TOKEN}")
            except FileNotFoundError:   # (a symlinked dir, e.g. /var/lock -> /run/lock)
                pass
    assert found == [], found   # (on the host: the private tmpfs dirs are the worker's own)


# ------------------------------------------------------------------ 5b. SysV IPC objects and POSIX message queues

IPC = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
key = 0x5ee17
libc.mq_open.restype = ctypes.c_int
"""
IPC_LEAVE = IPC + """
made = 0
made += libc.shmget(key, 4096, 0o1600) >= 0           # IPC_CREAT | 0600
made += libc.msgget(key, 0o1600) >= 0
made += libc.semget(key, 1, 0o1600) >= 0
made += libc.mq_open(b"/leak", 0o102, 0o600, None) >= 0   # O_CREAT | O_RDWR
return made
"""
IPC_LOOK = IPC + """
found = 0
found += libc.shmget(key, 0, 0) >= 0
found += libc.msgget(key, 0) >= 0
found += libc.semget(key, 0, 0) >= 0
found += libc.mq_open(b"/leak", 0, 0, None) >= 0
return found
"""


@pytest.mark.parametrize("kind", ["gsm8k", "asserts"])
def test_no_ipc_object_outlives_its_check(kind):
    probes, hostile = _hostile_then_probe([_as_kind(kind, IPC_LEAVE, -1)], _as_kind(kind, IPC_LOOK, 0))
    assert all(p.passed for p in probes), (probes, hostile)


def test_ipc_objects_still_work_within_a_check():
    """Cleaning up between checks must not take SysV IPC away from a check that uses it."""
    use = IPC + """
shm = libc.shmget(ctypes.c_int(0), 4096, 0o1600)   # IPC_PRIVATE
libc.shmat.restype = ctypes.c_void_p
addr = libc.shmat(shm, None, 0)
ctypes.memmove(addr, b"abc", 3)
ok = ctypes.string_at(addr, 3) == b"abc"
return int(ok and libc.semget(ctypes.c_int(0), 1, 0o1600) >= 0 and libc.msgget(ctypes.c_int(0), 0o1600) >= 0)
"""
    with Verifier(SandboxLimits(timeout_s=5), workers=1) as v:
        out = v.verify([_as_kind("gsm8k", use, 1)] * 3)
    assert all(x.passed for x in out), out


# ------------------------------------------------------------------ 5c. the reused scratch dir's metadata

SCRATCH_LEAVE = """
made = 0
try:
    os.setxattr(".", "user.leak", b"1")
    made += 1
except OSError:
    pass
os.utime(".", (12345, 12345))
return made
"""
SCRATCH_LOOK = """
st = os.stat(".")
return len(os.listxattr(".")) + (int(st.st_mtime) == 12345) + (int(st.st_atime) == 12345)
"""


def test_scratch_dir_metadata_does_not_outlive_its_check():
    probes, hostile = _hostile_then_probe([_as_kind("gsm8k", SCRATCH_LEAVE, -1)], _as_kind("gsm8k", SCRATCH_LOOK, 0))
    assert all(p.passed for p in probes), (probes, hostile)


def test_scratch_dir_metadata_without_a_fresh_zygote():
    """The same with a p3 check (untrusted sat: the Python zygote's path) and a trusted one."""
    sat = "def sat(x: int):\n    return x == 0\n"
    leave = "import os\ndef sol():\n" + "".join("    " + line + "\n" for line in SCRATCH_LEAVE.strip().splitlines())
    look = "import os\ndef sol():\n" + "".join("    " + line + "\n" for line in SCRATCH_LOOK.strip().splitlines())
    for trusted in (False, True):
        probes, hostile = _hostile_then_probe([Check("p3", leave, sat=sat, trusted_sat=trusted)],
                                              Check("p3", look, sat=sat, trusted_sat=trusted))
        assert all(p.passed for p in probes), (trusted, probes, hostile)


# ------------------------------------------------------------------ 5d. keys in the uid's keyrings

KEYS = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
add_key, keyctl = {"x86_64": (248, 250), "aarch64": (217, 219)}[os.uname().machine]
rings = (-4, -5)   # KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING
"""
KEYS_LEAVE = KEYS + """
made = 0
for ring in rings:
    made += libc.syscall(add_key, b"user", b"leak", b"secret", 6, ring) >= 0
persistent = libc.syscall(keyctl, 22, -1, -2)   # KEYCTL_GET_PERSISTENT, linked into the process keyring
if persistent >= 0:
    made += libc.syscall(add_key, b"user", b"leak", b"secret", 6, persistent) >= 0
return made
"""
KEYS_LOOK = KEYS + """
found = 0
for ring in rings:
    found += libc.syscall(keyctl, 10, ring, b"user", b"leak", 0) >= 0   # KEYCTL_SEARCH
persistent = libc.syscall(keyctl, 22, -1, -2)
if persistent >= 0:
    found += libc.syscall(keyctl, 10, persistent, b"user", b"leak", 0) >= 0
return found
"""


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="syscall numbers for x86_64/aarch64")
@pytest.mark.parametrize("kind", ["gsm8k", "asserts"])
def test_no_key_outlives_its_check(kind):
    probes, hostile = _hostile_then_probe([_as_kind(kind, KEYS_LEAVE, -1)], _as_kind(kind, KEYS_LOOK, 0))
    assert all(p.passed for p in probes), (probes, hostile)


# ------------------------------------------------------------------ 5e. tasks that hold the uid's task budget

HOG = """
import time
r, w = os.pipe()
for _ in range(3):
    if os.fork() == 0:
        os.setsid()
        blocks = []
        try:   # as much memory as RLIMIT_AS allows, every page touched: slow to tear down
            while len(blocks) < 9:
                blocks.append(bytearray(50 << 20))
                for i in range(0, 50 << 20, 4096):
                    blocks[-1][i] = 1
        except MemoryError:
            pass
        os.write(w, b"x")
        time.sleep(1000)
        os._exit(0)
got = 0
while got < 3:
    got += len(os.read(r, 3))
return 1
"""
THREADS = """
import threading
done = []
ts = [threading.Thread(target=done.append, args=(1,)) for _ in range(3)]
for t in ts:
    t.start()
for t in ts:
    t.join()
return len(done)
"""


@pytest.mark.parametrize("kind", ["gsm8k", "asserts"])
def test_leftover_tasks_never_eat_the_next_checks_budget(kind):
    """A check's processes (slow to die: hundreds of MB each) are all gone, and reaped, before the next check of
    the same uid starts: the next check gets its whole RLIMIT_NPROC (here 1 process + 3 threads)."""
    hostile = [_as_kind(kind, HOG, 1)] * 3
    probes, _ = _hostile_then_probe(hostile, _as_kind(kind, THREADS, 3), timeout_s=10)
    assert all(p.passed for p in probes), probes


# ------------------------------------------------------------------ 6. other processes' command lines

def test_candidate_cannot_read_host_command_lines():
    me = os.getpid()
    look = f"""
seen = 0
for pid in ({me}, 1, os.getppid()):
    try:
        with open(f"/proc/{{pid}}/cmdline", "rb") as f:
            seen += len(f.read()) > 0
    except OSError:
        pass
seen += sum(1 for name in os.listdir("/proc") if name.isdigit() and int(name) in ({me}, 1, os.getppid()))
return seen
"""
    own = "return int(len(open('/proc/self/cmdline', 'rb').read()) > 0 and str(os.getpid()) in os.listdir('/proc'))"
    with Verifier(SandboxLimits(timeout_s=5), workers=1) as v:
        _needs_root(v)
        out = v.verify([_as_kind("gsm8k", look, 0), _as_kind("asserts", look, 0), _as_kind("gsm8k", own, 1)])
    assert all(x.passed for x in out), out
