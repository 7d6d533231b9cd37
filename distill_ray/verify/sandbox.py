"""Process isolation: kernel protections detected at start-up, the sandboxed child's setup, killing, waiting.

Everything here runs in a verifier worker process (root or not), never in the caller's process. A sandboxed
child is forked, moved to its own process group, given fresh fds, a private cwd, rlimits and (as root) an
unprivileged uid that no other process uses, so that RLIMIT_NPROC applies and `kill(-1)` under that uid reaches
every process it may have started.
"""

from __future__ import annotations

import ctypes
import errno
import os
import random
import re
import resource
import signal
import sys
import time

from distill_ray.verify import native
from distill_ray.verify.codec import FrameBuffer
from distill_ray.verify.procfs import children_of

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x08000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
UID_BASE = 1_000_000_000   # sandbox uids: UID_BASE + 3 * worker pid (+1 fresh judges, +2 persistent judge); no passwd needed


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prctl(option: int, arg: int) -> None:
    if _prctl(option, arg, 0, 0, 0) != 0:   # (message built only on failure: this runs in every child)
        _check(-1, f"prctl({option})")


_prctl = _libc.prctl


def setup_worker_isolation(limits) -> dict:
    """Enter private namespaces where permitted; return {protection: "on ..." | "off: reason"}."""
    prot = {"process_group": "on", "rlimits": "on (cpu, address space, file size, open files, core)",
            "fresh_env": "on (worker exec'd with only LD_BIND_NOW=1)", "subreaper": "on"}
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)     # orphans of candidates come back to us to be reaped
    except OSError as e:
        prot["subreaper"] = f"off: {e}"
    prot["network"] = _try_unshare(CLONE_NEWNET, "on (empty network namespace)")
    prot["ipc"] = _try_unshare(CLONE_NEWIPC, "on (private IPC namespace; SysV objects removed after each check)")
    global PRIVATE_IPC
    PRIVATE_IPC = prot["ipc"].startswith("on")
    if PRIVATE_IPC and NATIVE is not None:
        NATIVE.set_private_ipc(1)   # the watching zygote checks for SysV objects after each candidate
    prot["private_tmp"] = _private_mounts(limits["tmpfs_mb"])
    if prot["private_tmp"].startswith("on"):
        prot["proc"] = _private_proc()
        prot["read_only"] = _read_only_rest()
    else:
        prot["proc"] = prot["read_only"] = "off: no private mount namespace"
    drop_for_children()
    prot["syscalls"] = _deny_syscalls()
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


PRIVATE_IPC = False   # the worker has an IPC namespace of its own: every SysV object in it is a sandbox's


def _private_proc() -> str:
    """A fresh procfs on /proc with hidepid=invisible: a sandbox uid sees (and can read the command lines of) only
    its own processes; root (the worker) still sees all. Same PID namespace: pids mean what they mean outside."""
    try:
        _check(_libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"hidepid=2"),
               "mount proc hidepid=2")
        return "on (fresh /proc with hidepid=invisible: other uids' processes are invisible)"
    except OSError as e:
        return f"off: {e}"


MS_RDONLY, MS_NOEXEC, MS_REMOUNT = 0x1, 0x8, 0x20
_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 0x400,
                "nodiratime": 0x800, "relatime": 0x200000, "strictatime": 0x1000000}


def _read_only_rest() -> str:
    """Every mount but the private tmpfs dirs and /proc made read-only in our mount namespace: a sandbox uid can
    leave nothing in a world-writable dir (/run/lock, ...) or file anywhere else, whatever the host has (device
    nodes such as /dev/null stay writable). The worker, root, writes only in its private tmpfs dirs."""
    skip = set(PRIVATE_TMP_DIRS) | {"/proc"}
    done, failed = 0, []
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4:6] for line in f]
    for point, opts in points:
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)
        if point in skip or point.startswith("/proc/") or not os.path.exists(point):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in opts.split(","):
            flags |= _MOUNT_FLAGS.get(opt, 0)
        if _libc.mount(None, point.encode(), None, flags, None) == 0:
            done += 1
        else:
            failed.append(point)
    if failed:
        return f"partial: {len(failed)} mounts stay writable ({', '.join(failed[:3])})"
    return f"on ({done} mounts read-only but the private tmpfs dirs)"


# Syscalls no candidate needs that would leave state no per-check clean-up reaches: kernel keyrings (the uid's
# user, user-session and persistent keyrings outlive its processes) and POSIX message queues. Per audit arch:
# (arch, mask applied to the syscall number, numbers).
_DENIED = {"x86_64": ((0xC000003E, ~0x40000000 & 0xFFFFFFFF, (248, 249, 250, 240)),   # (x32 has bit 30 set)
                      (0x40000003, 0xFFFFFFFF, (286, 287, 288, 277))),                # i386 (int 0x80)
           "aarch64": ((0xC00000B7, 0xFFFFFFFF, (217, 218, 219, 180)),
                       (0x40000028, 0xFFFFFFFF, (309, 310, 311, 274)))}                # arm (compat)


def _deny_syscalls() -> str:
    """A seccomp filter, inherited by everything the worker forks: add_key, request_key, keyctl and mq_open fail
    with EPERM. (No per-check cost: a fork copies a reference; allowed syscalls hit the kernel's per-syscall
    cache, the filter never depending on arguments.)"""
    import platform
    import struct
    arches = _DENIED.get(platform.machine())
    if arches is None:
        return f"off: no syscall table for {platform.machine()}"
    ld, jeq, alu_and, ret = 0x20, 0x15, 0x54, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | 1   # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    prog = [(ld, 0, 0, 4)]   # A = arch
    for arch, mask, nrs in arches:
        block = [(ld, 0, 0, 0), (alu_and, 0, 0, mask)]
        block += [(jeq, 0, 0, nr) for nr in nrs] + [(ret, 0, 0, allow)]
        prog.append((jeq, 0, len(block), arch))   # not this arch: skip its block
        prog += block
    prog.append((ret, 0, 0, allow))
    prog.append((ret, 0, 0, deny))
    end = len(prog) - 1
    prog = [(c, end - i - 1, jf, k) if c == jeq and k in {nr for a in arches for nr in a[2]} and jf == 0 else
            (c, jt, jf, k) for i, (c, jt, jf, k) in enumerate(prog)]
    raw = b"".join(struct.pack("HBBI", c, jt, jf, k & 0xFFFFFFFF) for c, jt, jf, k in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(buf))
    if _libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:   # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        return f"off: seccomp: {os.strerror(ctypes.get_errno())}"
    return "on (seccomp: keyctl, add_key, request_key and mq_open refused)"


_IPC = ((14, 13, 0), (12, 11, 0), (19, 18, 7))   # (X_INFO, X_STAT, index of its count of objects in use)


def clear_ipc() -> None:
    """Remove every SysV IPC object (shared memory, message queues, semaphore sets) of the worker's private IPC
    namespace: all were made by sandboxed processes, which are gone. Three syscalls when there are none."""
    if not PRIVATE_IPC:
        return
    buf = ctypes.create_string_buffer(512)
    for kind, (info, stat, used) in zip(("shmctl", "msgctl", "semctl"), _IPC):
        fn = getattr(_libc, kind)
        args = (0,) if kind == "semctl" else ()
        top = fn(0, *args, info, buf)
        if top < 0 or int.from_bytes(buf.raw[4 * used:4 * used + 4], "little") == 0:
            continue
        for index in range(top + 1):
            ident = fn(index, *args, stat, buf)
            if ident >= 0:
                fn(ident, *args, 0, None)   # IPC_RMID


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


_CLEAN_SIZE: dict = {}   # private tmp dir -> its st_size when wipe_private_tmp last found it clean


def wipe_private_tmp(keep: str = "") -> None:
    """Empty the worker's private tmpfs dirs between checks (all but `keep`, the forker's own scratch dir, which
    it empties itself), so nothing carries over to the next candidate.

    On tmpfs (which these dirs are: private_tmp is on only when all were mounted) a dir's st_size counts its
    entries, 20 bytes each, whatever their names or kinds. A dir whose size is the one it had when last found
    clean therefore holds as many entries as then: none, or only `keep`, which the caller has just checked is
    still there (batch: Scratch.reset, before this). So one lstat per dir instead of listing it.
    """
    for d in PRIVATE_TMP_DIRS:
        try:
            size = os.lstat(d).st_size
            if _CLEAN_SIZE.get(d) == size:
                continue
            names = os.listdir(d)
        except OSError:
            continue
        dirty = [name for name in names if os.path.join(d, name) != keep]
        if not dirty:
            _CLEAN_SIZE[d] = size
        for name in dirty:
            path = os.path.join(d, name)
            if os.path.isdir(path) and not os.path.islink(path):
                rmtree(path)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def clean_size(d: str, keep: str = "") -> int | None:
    """A private tmp dir's st_size when clean (see wipe_private_tmp), wiping it first if that is not known yet;
    None if it cannot be known."""
    if d not in _CLEAN_SIZE:
        wipe_private_tmp(keep)
    return _CLEAN_SIZE.get(d)


def make_private_dir(parent: str = "/tmp", prefix: str = "cand-") -> str:
    """tempfile.mkdtemp(prefix, parent) (mode 0700, a random name, never an existing dir), without its imports.

    What the worker imports, the forker holds, and every candidate fork copies its page table entries and memory
    mappings and unmaps them again at exit. tempfile imports shutil, which loads zlib, bz2 and lzma: three C
    modules and three libraries, ~30 of the worker's ~140 mappings. So the worker imports neither (rmtree below
    removes dirs itself).
    """
    for _ in range(100):
        path = os.path.join(parent, prefix + os.urandom(8).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no fresh name for a scratch dir in {parent}")


def rmtree(path: str) -> None:
    """shutil.rmtree(path, ignore_errors=True), without recursion: a candidate can leave a chain of dirs deeper than
    Python's recursion limit (shutil.rmtree then raises RecursionError even with ignore_errors), or deeper than
    PATH_MAX. Never follows a symlink. (No shutil either: see make_private_dir.)"""
    try:
        os.rmdir(path)   # the usual case: empty
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    try:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:   # not a dir (or a symlink to one): remove the entry itself
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    try:
        remove_contents(top)
    finally:
        os.close(top)
    try:
        os.rmdir(path)
    except OSError:
        pass


RM_OPEN_DIRS = 32        # dir fds remove_contents holds at most, whatever the depth
RM_MAX_STEPS = 1 << 20   # dirs it opens or moves, at most: it ends even on a tree it cannot remove


def remove_contents(top: int) -> None:
    """Remove everything in the dir open as fd top, iteratively (a stack of dir fds, not recursion). A dir nested
    more than RM_OPEN_DIRS deep is first moved up into top under a fresh name, so the fds held stay bounded."""
    stack: list[tuple[int, str]] = [(top, "")]   # (dir fd, its name in the dir below it on the stack)
    stuck: set[int] = set()   # inodes of dirs emptied as far as possible that still could not be removed
    for _ in range(RM_MAX_STEPS):
        if not stack:
            return
        fd = stack[-1][0]
        sub = _clear_files(fd, stuck)
        if sub is None:   # nothing left in it but what could not be removed: go back up
            _, name = stack.pop()
            if stack:
                _pop_dir(fd, name, stack[-1][0], stuck)
        elif len(stack) >= RM_OPEN_DIRS:
            try:
                os.rename(sub, "rm-" + os.urandom(8).hex(), src_dir_fd=fd, dst_dir_fd=top)
            except OSError:
                _note_stuck(sub, fd, stuck)
        else:
            try:
                stack.append((os.open(sub, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd), sub))
            except OSError:
                _note_stuck(sub, fd, stuck)
    for fd, _ in stack[1:]:
        os.close(fd)


def _note_stuck(name: str, fd: int, stuck: set) -> None:
    try:
        stuck.add(os.stat(name, dir_fd=fd, follow_symlinks=False).st_ino)
    except OSError:
        pass


def _pop_dir(fd: int, name: str, parent: int, stuck: set) -> None:
    """Close a dir we emptied and remove it from its parent (noted as stuck if that fails)."""
    ino = os.fstat(fd).st_ino
    os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent)
    except OSError:
        stuck.add(ino)


def _clear_files(fd: int, stuck: set) -> str | None:
    """Remove the dir's files and empty subdirs; the name of a subdir to go into (not empty, not stuck), or None."""
    with os.scandir(fd) as entries:
        names = [(e.name, e.is_dir(follow_symlinks=False), e.inode()) for e in entries]
    for name, is_dir, ino in names:
        if ino in stuck:
            continue
        try:
            os.rmdir(name, dir_fd=fd) if is_dir else os.unlink(name, dir_fd=fd)
        except OSError:
            if is_dir:
                return name
    return None


def drop_for_children() -> None:
    """Process-wide settings every sandboxed child would set anyway, set once in the worker and inherited.

    Each step a child does not have to repeat saves its copy-on-write page faults (see fork_sandboxed).
    The worker never execs anything and needs no supplementary groups (it is root or the caller's user).
    """
    global INHERITED
    prctl(PR_SET_NO_NEW_PRIVS, 1)          # exec of a setuid binary gains nothing; survives fork, never unset
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.geteuid() == 0:
        os.setgroups([])
    _devnull()
    INHERITED = True


INHERITED = False   # drop_for_children ran: every fork from here on has its settings already
_PLANS: dict = {}
_DEVNULL: list = []


def _devnull() -> int:
    """An fd on /dev/null opened once per process and inherited by its children (they dup it to 0)."""
    if not _DEVNULL:
        _DEVNULL.append(os.open(os.devnull, os.O_RDONLY))
    return _DEVNULL[0]


_ROOT: list = []


def root_fd() -> int:
    """An fd on "/" (opened once per process, numbered above any child's fds so they never inherit it): the cwd of
    judges, as an fd because the C sandbox entry (native.py) takes fds only."""
    if not _ROOT:
        fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        high = _libc.fcntl(fd, 0, 64)   # F_DUPFD (libc, not the fcntl module: see inode_flags)
        if high >= 0:   # else (an RLIMIT_NOFILE of 64 or less) keep it where it is
            os.close(fd)
            fd = high
        _ROOT.append(fd)
    return _ROOT[0]


_ioctl = ctypes.CDLL(None, use_errno=True).ioctl
_ioctl.argtypes, _ioctl.restype = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p], ctypes.c_int


def inode_flags(fd: int) -> int:
    """A file's inode flags (FS_IOC_GETFLAGS, as chattr sets them), 0 where the file system has none.

    Through libc, not the fcntl module, which the worker (and so every fork of its forker) would otherwise map:
    another library's five mappings for each fork to copy and each exit to unmap."""
    flags = (ctypes.c_int * 2)()   # the kernel writes an int at the start (room for a long, as the ioctl says)
    return flags[0] if _ioctl(fd, 0x80086601, flags) == 0 else 0


def _rlimits(limits: dict, top: int) -> tuple:
    """The (resource, (soft, hard)) list for these limits, built once per distinct limits (per-check timeouts)."""
    key = (limits["cpu_limit"], limits["memory_mb"], limits["file_size_mb"], limits["max_open_files"],
           limits["max_processes"], top)
    plan = _PLANS.get(key)
    if plan is None:
        cpu, mem = int(limits["cpu_limit"]), int(limits["memory_mb"]) << 20
        plan = _PLANS[key] = ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (mem, mem)),
                              (resource.RLIMIT_FSIZE, (limits["file_size_mb"] << 20,) * 2),
                              (resource.RLIMIT_NOFILE, (max(limits["max_open_files"], top),) * 2),
                              (resource.RLIMIT_CORE, (0, 0)),
                              (resource.RLIMIT_NPROC, (limits["max_processes"],) * 2))
    return plan


def plan(limits: dict, uid: int | None, cwd: str | int, fds: dict[int, int], judge: bool = False) -> tuple:
    """What enter() does in a child, worked out in the parent before the fork.

    In a freshly forked child every page it writes is copied (~3 us each), and Python work writes pages (reference
    counts, allocations); so the child is left with the syscalls only. fds maps the fd number the child will see
    to an fd inherited from the parent (0 is /dev/null if absent). cwd is a path, or an open directory fd (the
    forker's scratch dir, checked by inode: no path games).
    """
    if 0 not in fds:
        fds = {**fds, 0: _devnull()}
    order = _dup_order(fds)
    simple = order is not None              # the usual case: dup2 in this order, no juggling
    top = max(fds) + 1
    rlimits = tuple(rv for rv in _rlimits(limits, top) if rv[0] != resource.RLIMIT_CORE or not INHERITED)
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]   # the child inherits this soft limit
    p = (cwd, tuple(order if simple else fds.items()), simple, top, fd_limit, rlimits, uid, judge)
    flat = native.flatten(p) if NATIVE is not None and INHERITED else None
    return p + (None if flat is None else native.plan_array(flat),)   # for the C entry, built here (see fork_planned)


def _dup_order(fds: dict[int, int]) -> list | None:
    """(target, source) pairs in an order where no dup2 overwrites a source still to be read (e.g. /dev/null on
    fd 3 goes to 0 before the report pipe goes to 3); None when there is none (a cycle: dup first)."""
    left, order = dict(fds), []
    while left:
        free = [t for t in left if not any(src == t and other != t for other, src in left.items())]
        if not free:
            return None
        for t in free:
            order.append((t, left.pop(t)))
    return order


def enter(p: tuple) -> None:
    """In a freshly forked child: new process group, only the planned fds, rlimits, unprivileged uid."""
    cwd, fds, simple, top, fd_limit, rlimits, uid, judge, _ = p
    os.setpgid(0, 0)
    if type(cwd) is int:
        os.fchdir(cwd)                     # before the dup2s below, which may reuse its number
    else:
        os.chdir(cwd)
    if not simple:
        fds = [(target, os.dup(src)) for target, src in fds]   # dup first: sources collide with targets
    for target, src in fds:
        os.dup2(src, target)
    os.closerange(top, fd_limit)           # close_range(2) where the kernel has it: one syscall
    for res, val in rlimits:
        resource.setrlimit(res, val)
    if uid is not None:
        if not INHERITED:
            os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if not INHERITED:
        prctl(PR_SET_NO_NEW_PRIVS, 1)      # exec of a setuid binary gains nothing
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # set after setuid, which clears it
    if judge:
        prctl(PR_SET_DUMPABLE, 0)          # a same-uid process cannot ptrace or open our /proc/<pid>/fd
    # Signal dispositions and the (empty) environment come from the worker, set up once in worker.main.


_fork = ctypes.PyDLL(None, use_errno=True).fork   # PyDLL: called with the GIL held, like os.fork


def raw_fork() -> int:
    """fork(2) without Python's at-fork handlers, for the single-threaded worker and forker only.

    A process with no other threads has no lock for those handlers to repair; what they do cost is page
    faults: after a fork every page either side writes is copied, and random's reseed hook alone writes ~45
    pages in the child (~60 with the interpreter's own re-init), a fifth of a trivial check. random's state is
    advanced in the parent instead, so children still see different random streams.
    """
    random.getrandbits(32)
    pid = _fork()
    if pid < 0:
        raise OSError(ctypes.get_errno(), "fork failed")
    return pid


def fork_sandboxed(body, limits: dict, uid: int | None, cwd: str | int, fds: dict[int, int],
                   judge: bool = False) -> int:
    """Fork a child that enters the sandbox and runs body(); the child never returns into the caller."""
    return fork_planned(plan(limits, uid, cwd, fds, judge), body)


NATIVE = None   # native.Helper where the worker could load the C helper (see native.py), else None


def fork_planned(p: tuple, body) -> int:
    """fork_sandboxed with the sandbox planned beforehand (see plan(): the zygote plans before it is forked)."""
    c_plan = p[-1]
    if c_plan is not None:   # fork and enter in C: the child returns into Python already sandboxed
        random.getrandbits(32)   # as raw_fork does
        pid = NATIVE.fork_enter(c_plan)
        if pid < 0:
            raise OSError(ctypes.get_errno(), "fork failed")
    else:
        pid = raw_fork()
    if pid == 0:
        code = 70
        try:
            if c_plan is None:
                enter(p)
            body()
            code = 0
        except BaseException:
            pass
        finally:
            os._exit(code)
    return pid


def kill_uid(uid: int | None) -> None:
    """SIGKILL every process of a sandbox uid (including ones that left their process group).

    kill(-1) with real and effective uid set to the sandbox uid signals exactly that uid's processes. This process
    never runs as the uid (a process of that uid, a candidate's helper in a session of its own, could then stop or
    kill it): a throwaway killer does, retried if it is stopped or killed first (zygote.c: kill_uid_outside, or
    _killer_fork below without the C helper).
    """
    if uid is None:
        return
    if NATIVE is not None and NATIVE.kill_uid(uid) == 0:
        return
    for _ in range(KILLER_TRIES):
        if _killer_fork(uid):
            return


KILLER_TRIES, KILLER_WAIT_S = 50, 0.1
GONE_WAIT_S = 10.0   # kill_uid_gone gives up after this long (a task that cannot die: the next check may fail)


def kill_uid_gone(uid: int | None, timeout_s: float = GONE_WAIT_S) -> bool:
    """Kill every process of a sandbox uid and wait until none is left, reaping those that come back to us (we
    are a subreaper): killed tasks count against the uid's RLIMIT_NPROC until they are reaped, so the next check
    of the uid would find its task budget eaten. True once the uid has no task at all (zombies included)."""
    if uid is None:
        return True
    deadline = time.monotonic() + timeout_s
    while True:
        left = NATIVE.kill_uid_left(uid) if NATIVE is not None else -1
        if left < 0:
            left = next((r for r in (_killer_fork(uid, probe=True) for _ in range(KILLER_TRIES)) if r >= 0), -1)
        if left == 0:
            return True
        reap_orphans()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0005)


def _killer_fork(uid: int, probe: bool = False):
    """One forked killer: it drops to uid (after which it is not dumpable: nothing of that uid can read its copy
    of our memory), kills and exits. True if it got to its kill(-1). With probe: -1 if it did not, else 0 if the
    uid had no process left at all, 1 if it had (just killed, dying, or zombies)."""
    pid = raw_fork()
    if pid == 0:
        code = 0
        try:
            if probe:   # a fork of ours then fails iff the uid has another task (see zygote.c: prober_main)
                resource.setrlimit(resource.RLIMIT_NPROC, (2, 2))
            os.setresuid(uid, uid, uid)
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if probe:
                try:
                    child = raw_fork()
                except OSError as e:
                    os._exit(3 if e.errno == errno.EAGAIN else 2)
                if child == 0:
                    os._exit(0)
                os.waitpid(child, 0)
        except BaseException:
            os._exit(2)
        os._exit(code)
    deadline = time.monotonic() + KILLER_WAIT_S
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:   # stopped by a process of that uid: we are root, it dies at once
            os.kill(pid, signal.SIGKILL)
            done = os.waitpid(pid, 0)
            break
        time.sleep(0.0005)
    code = os.WEXITSTATUS(done[1]) if os.WIFEXITED(done[1]) else -1
    if probe:
        return 0 if code == 0 else 1 if code == 3 else -1
    return code == 0


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


def readable(fds: list[int], timeout: float) -> list[int]:
    """Those of fds that are readable within timeout seconds: select.select, with the module imported on first
    use. The trusted-sat and gsm8k path never needs it in the forker, whose mappings every candidate's fork
    copies and every candidate's exit unmaps (a library: five more, see docs/verify-performance.md)."""
    import select
    return select.select(fds, [], [], timeout)[0]


CPU_STEP_S = 0.01   # the shortest wait between two CPU readings (/proc counts in 10 ms ticks)
TREE_MAX = 512      # processes summed per reading, at most (RLIMIT_NPROC bounds them where uids drop)
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int):
    """(CPU seconds of pid and of the children it reaped: utime + stime + cutime + cstime, start time in ticks), or
    None (gone). /proc/<pid>/stat's fields after the command, which may hold anything, so split after its ')'."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return sum(int(x) for x in fields[11:15]) / _TICK, int(fields[19])


def tree_cpu(watcher: int, first: int) -> float:
    """The CPU seconds a check's processes have used: first (its candidate, or judge) and what it started.

    That is first's process tree, plus the children of watcher (the process they come back to when orphaned, as
    it is their subreaper) started no earlier than first, and their trees; for each process its own CPU time and
    that of the children it reaped (nothing reaps a check's processes while it runs but the check's own). Read on
    the slow path only (see wait_message), as zygote.c's tree_cpu does."""
    start = _stat(first)
    if start is None:
        return 0.0
    total, seen, todo = 0.0, {first}, [first]
    for pid in children_of(watcher):
        st = _stat(pid) if pid not in seen else None
        if st is not None and st[1] >= start[1]:
            seen.add(pid)
            todo.append(pid)
    while todo and len(seen) <= TREE_MAX:
        pid = todo.pop()
        st = _stat(pid)
        if st is None:
            continue
        total += st[0]
        for child in children_of(pid):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return total


def wait_message(fd: int, sink: OutputSink | None, deadline: float, max_bytes: int, cpu=None):
    """Wait for one framed message on fd until the deadline, draining the output pipe meanwhile.

    cpu: (budget_s, start, used): the message must also come before used() (the CPU seconds of the check's
    processes, see tree_cpu) reaches budget_s; deadline is then the wall-clock cap. used() is first read once
    the check has run budget_s of wall time (a single process cannot have used more by then: an honest check
    that ends sooner never costs a reading), then again each time the rest of the budget could have run out.
    Returns (message, why): message is None with why "timeout" (the deadline), "cpu" (the CPU budget), "eof" or
    "too large: ..." when none arrived.
    """
    # Both fds stay blocking (two syscalls fewer per check): they are read only when select says they are readable,
    # and nobody else holds their read ends, so a read never waits.
    reader = FrameBuffer(max_bytes)
    watch = [fd] + ([sink.fd] if sink is not None else [])
    check_at = deadline if cpu is None else cpu[1] + cpu[0]
    while True:
        now = time.monotonic()
        if now >= deadline:
            return None, "timeout"
        if now >= check_at:
            used = cpu[2]()
            if used >= cpu[0]:
                return None, "cpu"
            check_at = now + max(cpu[0] - used, CPU_STEP_S)
        ready = readable(watch, min(deadline, check_at) - now)
        if sink is not None and sink.fd in ready and not sink.drain():
            watch.remove(sink.fd)
        if fd in ready:
            try:
                data = os.read(fd, 1 << 16)   # (a 1 MiB read costs an mmap, mremap and munmap per call)
            except BlockingIOError:
                continue
            if not data:
                return None, "eof"
            try:
                done, msg = reader.feed(data)
            except (ValueError, RecursionError) as e:   # too large, too deep, or not our JSON framing
                return None, f"bad message: {e}"
            if done:
                return msg, "ok"
