"""Process isolation: kernel protections detected at start-up, the sandboxed child's setup, killing, waiting.

Everything here runs in a verifier worker process (root or not), never in the caller's process. A sandboxed
child is forked, moved to its own process group, given fresh fds, a private cwd, rlimits and (as root) an
unprivileged uid that no other process uses, so that RLIMIT_NPROC applies and `kill(-1)` under that uid reaches
every process it may have started.
"""

from __future__ import annotations

import ctypes
import os
import resource
import select
import signal
import sys
import time

from distill_ray.verify.codec import FrameBuffer

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x08000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
UID_BASE = 1_000_000_000   # sandbox uids: UID_BASE + 2 * worker pid (+1 for the judge); no passwd entry needed


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def setup_worker_isolation(limits) -> dict:
    """Enter private namespaces where permitted; return {protection: "on ..." | "off: reason"}."""
    prot = {"process_group": "on", "rlimits": "on (cpu, address space, file size, open files, core)",
            "fresh_env": "on (worker exec'd with an empty environment)", "subreaper": "on"}
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)     # orphans of candidates come back to us to be reaped
    except OSError as e:
        prot["subreaper"] = f"off: {e}"
    prot["network"] = _try_unshare(CLONE_NEWNET, "on (empty network namespace)")
    prot["ipc"] = _try_unshare(CLONE_NEWIPC, "on (private IPC namespace)")
    prot["private_tmp"] = _private_mounts(limits["tmpfs_mb"])
    if os.geteuid() != 0:
        prot["uid_drop"] = "off: not root, so candidates run as this user (they can signal its processes)"
        prot["no_processes"] = "partial: RLIMIT_NPROC counts all processes of this user"
    elif not all(others_can_read(p) for p in (sys.base_prefix, sys.prefix) if os.path.isdir(p)):
        prot["uid_drop"] = "off: the Python install is not readable by other uids and could not be exposed"
        prot["no_processes"] = "off: RLIMIT_NPROC is not enforced for root"
    else:
        prot["uid_drop"] = "on (unprivileged uids unique to each worker)"
        prot["no_processes"] = f"on (RLIMIT_NPROC={limits['max_processes']} tasks per sandbox uid)"
    return prot


def _try_unshare(flag: int, on: str) -> str:
    try:
        _check(_libc.unshare(flag), "unshare")
        return on
    except OSError as e:
        return f"off: {e}"


def _private_mounts(size_mb: int) -> str:
    """A mount namespace with fresh tmpfs on the world-writable dirs, so a candidate can write nowhere shared."""
    try:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
        for d in PRIVATE_TMP_DIRS:
            if os.path.isdir(d):
                opts = f"size={size_mb}m,mode=1777".encode()
                _check(_libc.mount(b"tmpfs", d.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts), f"mount {d}")
        exposed = _expose_python()
        return "on (private tmpfs on " + ", ".join(PRIVATE_TMP_DIRS) + exposed + ")"
    except OSError as e:
        return f"off: {e}; world-writable dirs such as /tmp stay writable"


def others_can_read(path: str) -> bool:
    """Can a uid with no special rights read `path` (x on every ancestor dir, r on the path)?"""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        d = os.sep.join(parts[:i]) or os.sep
        if not os.stat(d).st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o004)


def _blocked_ancestor(path: str) -> str:
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        d = os.sep.join(parts[:i])
        if not os.stat(d).st_mode & 0o001:
            return d
    return path


def _expose_python() -> str:
    """Make the Python installation readable to sandbox uids when it lives in a private dir (e.g. /root/.pyenv).

    In our mount namespace, the private dir (e.g. /root) is covered by an empty tmpfs, which also hides whatever
    else it holds, and only the Python prefix and sys.path entries are bind-mounted back at their usual paths.
    """
    paths = sorted({os.path.realpath(p) for p in [sys.base_prefix, sys.prefix, *sys.path] if p and os.path.isdir(p)})
    needed = [p for p in paths if not others_can_read(p)]
    needed = [p for p in needed if not any(p != q and p.startswith(q + os.sep) for q in needed)]
    if not needed:
        return ""
    handles = {p: os.open(p, os.O_PATH) for p in needed}   # still reachable after the tmpfs hides their parent
    hidden = sorted({_blocked_ancestor(p) for p in needed})
    try:
        for blocked in hidden:
            _check(_libc.mount(b"tmpfs", blocked.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=755"),
                   f"mount tmpfs on {blocked}")
        for p, fd in handles.items():
            os.makedirs(p, mode=0o755, exist_ok=True)
            _check(_libc.mount(f"/proc/self/fd/{fd}".encode(), p.encode(), None, MS_BIND | MS_REC, None),
                   f"bind {p}")
    finally:
        for fd in handles.values():
            os.close(fd)
    return "; " + ", ".join(hidden) + " hidden except the Python install"


def wipe_private_tmp() -> None:
    """Empty the worker's private tmpfs dirs between checks, so nothing carries over to the next candidate."""
    import shutil
    for d in PRIVATE_TMP_DIRS:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            path = os.path.join(d, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def enter_sandbox(limits: dict, uid: int | None, cwd: str, fds: dict[int, int], judge: bool = False) -> None:
    """In a freshly forked child: new process group, only the given fds, rlimits, unprivileged uid.

    fds maps the fd number the child will see to an fd inherited from the parent (0 is /dev/null if absent).
    """
    os.setpgid(0, 0)
    high = {target: os.dup(src) for target, src in fds.items()}   # dup first: sources may collide with targets
    if 0 not in high:
        high[0] = os.open(os.devnull, os.O_RDONLY)
    for target, src in high.items():
        os.dup2(src, target)
    top = max(high) + 1
    os.closerange(top, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.chdir(cwd)
    cpu = int(limits["cpu_limit"])
    mem = int(limits["memory_mb"]) << 20
    for res, val in ((resource.RLIMIT_CPU, (cpu, cpu + 1)),
                     (resource.RLIMIT_AS, (mem, mem)),
                     (resource.RLIMIT_FSIZE, (limits["file_size_mb"] << 20,) * 2),
                     (resource.RLIMIT_NOFILE, (max(limits["max_open_files"], top),) * 2),
                     (resource.RLIMIT_CORE, (0, 0)),
                     (resource.RLIMIT_NPROC, (limits["max_processes"],) * 2)):
        resource.setrlimit(res, val)
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    prctl(PR_SET_NO_NEW_PRIVS, 1)          # exec of a setuid binary gains nothing
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # set after setuid, which clears it
    if judge:
        prctl(PR_SET_DUMPABLE, 0)          # a same-uid process cannot ptrace or open our /proc/<pid>/fd
    # Signal dispositions and the (empty) environment come from the worker, set up once in worker.main.


def fork_sandboxed(body, limits: dict, uid: int | None, cwd: str, fds: dict[int, int], judge: bool = False) -> int:
    """Fork a child that enters the sandbox and runs body(); the child never returns into the caller."""
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            enter_sandbox(limits, uid, cwd, fds, judge)
            body()
            code = 0
        except BaseException:
            pass
        finally:
            os._exit(code)
    return pid


def kill_uid(uid: int | None) -> None:
    """SIGKILL every process of a sandbox uid (including ones that left their process group).

    kill(-1) signals every process we may signal; with real and effective uid set to the sandbox uid and only the
    saved uid left at 0, that is exactly the sandbox uid's processes. Then we take root back via the saved uid.
    """
    if uid is None:
        return
    os.setresuid(uid, uid, 0)
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.setresuid(0, 0, 0)


def kill_group(pid: int) -> None:
    for fn in (os.killpg, os.kill):
        try:
            fn(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def reap_orphans() -> None:
    """Collect exit statuses of orphaned candidate processes re-parented to us (we are a subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class OutputSink:
    """Drains a child's stdout/stderr pipe: keeps the first max_bytes, counts and discards the rest."""

    def __init__(self, fd: int, max_bytes: int):
        self.fd, self.max_bytes, self.kept, self.total = fd, max_bytes, bytearray(), 0

    def drain(self) -> bool:
        """Read what is available; False at EOF."""
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return True
        if not data:
            return False
        self.total += len(data)
        room = self.max_bytes - len(self.kept)
        if room > 0:
            self.kept += data[:room]
        return True

    def tail(self, n: int = 120) -> str:
        return self.kept[-n:].decode("utf-8", "replace").strip()


def wait_message(fd: int, sink: OutputSink | None, deadline: float, max_bytes: int):
    """Wait for one framed message on fd until the deadline, draining the output pipe meanwhile.

    Returns (message, why): message is None with why "timeout", "eof" or "too large: ..." when none arrived.
    """
    os.set_blocking(fd, False)
    if sink is not None:
        os.set_blocking(sink.fd, False)
    reader = FrameBuffer(max_bytes)
    watch = [fd] + ([sink.fd] if sink is not None else [])
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, "timeout"
        ready, _, _ = select.select(watch, [], [], left)
        if sink is not None and sink.fd in ready and not sink.drain():
            watch.remove(sink.fd)
        if fd in ready:
            try:
                data = os.read(fd, 1 << 20)
            except BlockingIOError:
                continue
            if not data:
                return None, "eof"
            try:
                done, msg = reader.feed(data)
            except ValueError as e:   # too large, or bytes that are not our JSON framing
                return None, f"bad message: {e}"
            if done:
                return msg, "ok"
