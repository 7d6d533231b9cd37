/* The verifier's C helper (native.py builds and loads it). Built with -DWITH_PYTHON_H where Python's headers
   are there: then candidates' answers are also encoded here (see put_plain); without, everything else works. */
#ifdef WITH_PYTHON_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/xattr.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434   /* the same number on every architecture */
#endif

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

/* ---- A fresh candidate's small allocations go to fresh memory ----
   After a fork every page either process writes is copied (~4 us each here, with freeing it at exit). CPython's
   allocator puts each new object into the current pool of its size class, pages the child shares with its
   parent: a dozen size classes, a dozen copied pool pages (and their headers). A candidate instead allocates
   blocks of up to BUMP_MAX bytes one after the other from a region its zygote reserved but never touched (zeroed
   pages, no copies), and never reuses them: its process ends soon. Once BUMP_SIZE is used up, or for bigger
   blocks, CPython's own allocator serves (it also frees what was allocated before the fork). This wraps the
   allocator, as PyMem_SetAllocator's contract requires after start-up; the functions are looked up at run time, so
   the helper needs no Python headers. */
#ifndef WITH_PYTHON_H
typedef struct { void *ctx; void *(*malloc)(void *, size_t); void *(*calloc)(void *, size_t, size_t);
                 void *(*realloc)(void *, void *, size_t); void (*free)(void *, void *); } PyMemAllocatorEx;
enum { PYMEM_DOMAIN_MEM = 1, PYMEM_DOMAIN_OBJ = 2 };
#endif
#define BUMP_SIZE (2 << 20)
#define BUMP_MAX 4096
static char *bump_base, *bump_next, *bump_end;
static PyMemAllocatorEx old_mem, old_obj;
static void (*get_allocator)(int, PyMemAllocatorEx *), (*set_allocator)(int, PyMemAllocatorEx *);

static void *bump_take(size_t n) {
    size_t total = (n + 16 + 15) & ~(size_t)15;      /* a 16-byte header holds the size; blocks stay 16-aligned */
    if (n > BUMP_MAX || (size_t)(bump_end - bump_next) < total) return NULL;
    char *p = bump_next;
    bump_next += total;
    *(size_t *)p = n;
    return p + 16;
}
static int in_bump(const void *p) { return (const char *)p >= bump_base && (const char *)p < bump_end; }
static void *b_malloc(void *ctx, size_t n) {
    void *p = bump_take(n ? n : 1);
    return p ? p : ((PyMemAllocatorEx *)ctx)->malloc(((PyMemAllocatorEx *)ctx)->ctx, n);
}
static void *b_calloc(void *ctx, size_t k, size_t n) {
    void *p = n && k > BUMP_MAX / n ? NULL : bump_take(k * n != 0 ? k * n : 1);   /* never-used pages are zero */
    return p ? p : ((PyMemAllocatorEx *)ctx)->calloc(((PyMemAllocatorEx *)ctx)->ctx, k, n);
}
static void *b_realloc(void *ctx, void *p, size_t n) {
    if (p == NULL) return b_malloc(ctx, n);
    if (!in_bump(p)) return ((PyMemAllocatorEx *)ctx)->realloc(((PyMemAllocatorEx *)ctx)->ctx, p, n);
    size_t had = *(size_t *)((char *)p - 16);
    if (n <= had) return p;
    void *q = b_malloc(ctx, n);
    if (q) memcpy(q, p, had);
    return q;
}
static void b_free(void *ctx, void *p) {
    if (p && !in_bump(p)) ((PyMemAllocatorEx *)ctx)->free(((PyMemAllocatorEx *)ctx)->ctx, p);
}

/* In a zygote, before its first fork: reserve the region (untouched: forks copy nothing of it). */
static void bump_reserve(void) {
    get_allocator = (void (*)(int, PyMemAllocatorEx *))dlsym(RTLD_DEFAULT, "PyMem_GetAllocator");
    set_allocator = (void (*)(int, PyMemAllocatorEx *))dlsym(RTLD_DEFAULT, "PyMem_SetAllocator");
    void *p = mmap(NULL, BUMP_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    bump_base = bump_next = p == MAP_FAILED ? NULL : (char *)p;
    bump_end = bump_base ? bump_base + BUMP_SIZE : NULL;
    if (get_allocator) {   /* here, not in each candidate: its copy of these statics is then only read */
        get_allocator(PYMEM_DOMAIN_MEM, &old_mem);
        get_allocator(PYMEM_DOMAIN_OBJ, &old_obj);
    }
}

/* In a candidate, once sandboxed. */
static void bump_install(void) {
    if (!bump_base || !get_allocator || !set_allocator) return;
    PyMemAllocatorEx mem = {&old_mem, b_malloc, b_calloc, b_realloc, b_free}, obj = mem;
    obj.ctx = &old_obj;
    set_allocator(PYMEM_DOMAIN_MEM, &mem);
    set_allocator(PYMEM_DOMAIN_OBJ, &obj);
}

/* fork + enter: 0 in the child (sandboxed; a failed step exits it with status 70), the pid in the parent, or -1. */
int fork_enter(const long long *plan) {
    pid_t pid = fork();
    if (pid == 0 && enter(plan) != 0) _exit(70);
    return pid;
}

static int put(int fd, int32_t v) { return write(fd, &v, 4) == 4 ? 0 : -1; }   /* batch._INT: "<i" */

static int expect(int fd, char want) { char c; return read(fd, &c, 1) == 1 && c == want ? 0 : -1; }

/* ---- Killing every process of a sandbox uid, without ever running as that uid ----
   kill(-1) signals every process the caller may signal: run as the sandbox uid (real and effective), exactly that
   uid's processes. The process that does it must not be one we rely on: while it runs as the uid, any process of
   that uid (a candidate's helper in a session of its own) may SIGSTOP or SIGKILL it. So a throwaway killer does it:
   a clone sharing our memory (no page tables copied: cheap) with credentials of its own, which drops to the uid,
   kills and exits, and runs only raw syscalls on a stack of its own. Once it has dropped root it is not dumpable,
   so nothing of that uid can read or write the memory it shares with us; signals are all it can get, and a
   killer stopped or killed before its kill(-1) is replaced by a fresh one. */
static char killer_stack[16384] __attribute__((aligned(64)));

static int killer_main(void *arg) {
    long uid = (long)arg;
    if (syscall(SYS_setresuid, uid, uid, uid) != 0) syscall(SYS_exit, 2);
    syscall(SYS_kill, -1, SIGKILL);   /* ESRCH: none left */
    syscall(SYS_exit, 0);
    return 0;
}

/* kill_uid_left's killer: as killer_main, and its exit code says whether the uid has any other task (3) or none
   (0), zombies and dying ones included: exactly what counts against the uid's RLIMIT_NPROC. With its own
   RLIMIT_NPROC at 2 (itself + one), its clone of a child fails (EAGAIN) iff some other task of the uid exists. */
static char probe_stack[4096] __attribute__((aligned(64)));
static int probe_child(void *arg) { (void)arg; syscall(SYS_exit, 0); return 0; }

static int prober_main(void *arg) {
    long uid = (long)arg;
    struct rlimit two = {2, 2};
    if (syscall(SYS_prlimit64, 0, RLIMIT_NPROC, &two, NULL) != 0) syscall(SYS_exit, 2);
    if (syscall(SYS_setresuid, uid, uid, uid) != 0) syscall(SYS_exit, 2);
    syscall(SYS_kill, -1, SIGKILL);
    pid_t c = clone(probe_child, probe_stack + sizeof probe_stack, CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
    if (c < 0) syscall(SYS_exit, errno == EAGAIN ? 3 : 2);
    while (syscall(SYS_wait4, c, NULL, __WALL, NULL) < 0 && errno == EINTR) {}
    syscall(SYS_exit, 0);
    return 0;
}

#define KILLER_TRIES 50
#define KILLER_WAIT_MS 100

static int run_killer(int (*fn)(void *), long long uid) {
    for (int tries = 0; tries < KILLER_TRIES; tries++) {
        int pidfd = -1, status = 0;
        pid_t pid = clone(fn, killer_stack + sizeof killer_stack, CLONE_VM | CLONE_PIDFD | SIGCHLD,
                          (void *)(long)uid, &pidfd);
        if (pid < 0) return -1;
        struct pollfd p = {pidfd, POLLIN, 0};
        int r;
        while ((r = poll(&p, 1, KILLER_WAIT_MS)) < 0 && errno == EINTR) {}
        if (r <= 0) kill(pid, SIGKILL);   /* stopped (or too slow): we are root, it is gone at once */
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        close(pidfd);
        if (WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 3)) return WEXITSTATUS(status);
    }
    return -1;
}

/* SIGKILL every process of uid (sandbox.kill_uid). 0 once a killer finished its kill(-1), -1 if none could. */
int kill_uid_outside(long long uid) { return run_killer(killer_main, uid) < 0 ? -1 : 0; }

/* The same, and whether the uid had any process (sandbox.kill_uid_gone): 0 none at all, 1 some (just killed,
   dying, or zombies), -1 no killer could finish. */
int kill_uid_left(long long uid) {
    int r = run_killer(prober_main, uid);
    return r < 0 ? -1 : r == 3;
}

static int kill_uid(long long uid) { return kill_uid_outside(uid); }

/* Once a candidate is reaped, reap what it started (a zygote is their subreaper). With a sandbox uid (whose
   processes have just been killed) the next candidate starts only once they are all gone, since they count
   against its RLIMIT_NPROC: kill again while any is left (it may have forked meanwhile), for up to ~10 s (then
   -1: the zygote stops, and the forker's clean-up waits for them, sandbox.kill_uid_gone).
   Without one, reap those already dead (the others outlive the check, as batch.py's path lets them). */
#define REAP_WAITS 10000   /* ms: a task that cannot die in this long stops the zygote (sandbox.GONE_WAIT_S) */
static int reap_rest(long long uid) {
    for (int waits = 0; waits < REAP_WAITS;) {
        int st;
        pid_t r = waitpid(-1, &st, WNOHANG | __WALL);   /* __WALL: children of any exit signal */
        if (r > 0) continue;
        if (r < 0) {
            if (errno == EINTR) continue;
            return 0;                                   /* ECHILD: none left */
        }
        if (uid < 0) return 0;
        if (kill_uid(uid) != 0) return -1;
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
        waits++;
    }
    return uid < 0 ? 0 : -1;
}

/* The uid a plan (see enter) gives its process, -1 for none. */
static long long plan_uid(const long long *p) {
    const long long *r = p + 2 + 2 * p[1];
    return r[3 + 3 * r[2]];
}

/* batch._watch's end: kill the candidate's group and every process of its uid, then reap it and what it started.
   -1: no killer could finish (see kill_uid_outside).

   The uid-wide kill is skipped where the check left no process: a throwaway killer per check was ~0.07 ms of CPU
   and ~0.16 ms of the zygote's time per check, of a trusted check's ~0.9 ms (docs/verify-performance.md), and an
   honest candidate starts nothing. Why "the candidate is reaped and the zygote has no child left" means "no
   process of the uid is left":
   - at the zygote's start the uid was killed (clear_uids: no process of it that existed then can still run or
     fork, a fork being atomic with kill(-1) under tasklist_lock), and from then on only a process of the uid can
     make another one: no trusted process forks as the uid while the zygote runs but the zygote itself (its
     candidates, its judges) and its killers, which only kill (the worker and the forker wait for the zygote).
     So every process of the uid descends from one of this zygote's children, the earlier ones gone and reaped;
   - a child's descendants stay below the zygote, their subreaper: an orphan goes to its nearest living
     subreaper ancestor (the zygote, or a descendant that made itself one), a new PID namespace's orphans to that
     namespace's init (a descendant too, whose death ends them all); a process's children are reparented before
     it can be reaped, and fork is atomic with reparenting (tasklist_lock), so none slips by;
   - so once the candidate is reaped, any process left of its check is a descendant of a child of the zygote,
     and waitpid(-1, WNOHANG | __WALL) says ECHILD only where the zygote has no child at all (any exit signal,
     zombies, stopped or traced ones all count): then nothing of the check is left to kill or reap.
   The candidate is reaped without blocking first: a process of its check may hold it (a tracer it let attach,
   after PR_SET_DUMPABLE, keeps its zombie from us; a file system it serves may keep it from dying), which only
   the uid-wide kill undoes. So we wait on its pidfd, at most REAP_FAST_MS, for it to exit, and reap it with
   WNOHANG. Anything else (a uid not cleared at the start, no pidfd, not dead in time, not reapable, any other
   child at all) takes the old path: kill the uid, then wait for the candidate and reap everything. */
#define CLEARED_MAX 8
#define REAP_FAST_MS 50
static long long cleared[CLEARED_MAX];
static int ncleared;

/* In a zygote, before its first fork: kill every process of these uids (-1: none), and note those killed. */
static void clear_uids(const long long *uids, int n, int stride) {
    ncleared = 0;
    for (int i = 0; i < n; i++) {
        long long uid = uids[(long)i * stride];
        int seen = uid < 0;
        for (int k = 0; k < ncleared && !seen; k++) seen = cleared[k] == uid;
        if (!seen && ncleared < CLEARED_MAX && kill_uid(uid) == 0) cleared[ncleared++] = uid;
    }
}

static int uid_cleared(long long uid) {
    for (int k = 0; k < ncleared; k++) if (cleared[k] == uid) return 1;
    return 0;
}

/* 1: pid exited and is reaped (*status) and the zygote has no other child; -1: reaped, but some child is left;
   0: not reaped. */
static int reaped_alone(pid_t pid, int *status) {
    int fd = (int)syscall(SYS_pidfd_open, pid, 0), st, r = 0;
    if (fd < 0) return 0;
    struct pollfd p = {fd, POLLIN, 0};
    while ((r = poll(&p, 1, REAP_FAST_MS)) < 0 && errno == EINTR) {}
    close(fd);
    if (r != 1) return 0;
    pid_t w;
    while ((w = waitpid(pid, status, WNOHANG)) < 0 && errno == EINTR) {}
    if (w != pid) return 0;                             /* not reapable by us: a tracer holds it */
    while ((w = waitpid(-1, &st, WNOHANG | __WALL)) < 0 && errno == EINTR) {}
    return w < 0 && errno == ECHILD ? 1 : -1;
}

static int kill_and_reap(pid_t pid, long long uid, int *status) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    int alone = uid >= 0 && uid_cleared(uid) ? reaped_alone(pid, status) : 0;
    if (alone == 1) return 0;                            /* nothing else of the check exists: nothing to kill */
    if (uid >= 0 && kill_uid(uid) != 0) return -1;
    if (alone == 0) while (waitpid(pid, status, 0) < 0 && errno == EINTR) {}
    return reap_rest(uid);
}

/* Fork the process planned at plan; report its pid; on "r" reap it (and what it started) and report its wait
   status. Returns 0 in the child (sandboxed), 1 in the zygote to go on, -1 to stop. */
static int serve(const long long *plan, const int *closes, int nclose, int ctl_r, int info_w, int candidate) {
    pid_t pid = fork();
    if (pid == 0) {
        if (enter(plan) != 0) _exit(70);
        if (candidate) bump_install();
        return 0;
    }
    for (int k = 0; k < nclose; k++) close(closes[k]);
    if (put(info_w, pid > 0 ? pid : -1) != 0) return -1;
    if (pid > 0) {
        int status = 0;
        if (expect(ctl_r, 'r') != 0) return -1;
        if (kill_and_reap(pid, plan_uid(plan), &status) != 0) return -1;   /* the forker killed its group only */
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
    bump_reserve();
    long long uids[2 * n > 0 ? 2 * n : 1];   /* every candidate's and fresh judge's uid, cleared once (serve) */
    for (int i = 0; i < n; i++) {
        uids[2 * i] = plan_uid(plans + offsets[i]);
        uids[2 * i + 1] = judge_offsets[i] >= 0 ? plan_uid(plans + judge_offsets[i]) : -1;
    }
    clear_uids(uids, 2 * n, 1);
    for (int i = 0; i < n; i++) {
        int r = serve(plans + offsets[i], closes + 2 * i, 2, ctl_r, info_w, 1);
        if (r <= 0) return r == 0 ? i : -1;
        char c;
        if (read(ctl_r, &c, 1) != 1) return -1;
        if (c == 'j' && judge_offsets[i] >= 0) {
            r = serve(plans + judge_offsets[i], judge_closes + 3 * i, 3, ctl_r, info_w, 0);
            if (r <= 0) return r == 0 ? n + i : -1;
            if (read(ctl_r, &c, 1) != 1) return -1;
        }
        if (c != 'n') return -1;
    }
    return -1;
}

/* A frame's length as it starts every frame (codec._HEADER: ">I"). */
static void put_length(unsigned char *b, uint32_t n) {
    b[0] = n >> 24;
    b[1] = (n >> 16) & 255;
    b[2] = (n >> 8) & 255;
    b[3] = n & 255;
}

/* ---- The watching zygote (watching_zygote.py): checks without a fresh judge ----
   Started from C (run_watching_zygote), it never runs Python: for each check it forks the candidate, watches
   it as batch._watch does, kills and reaps it, checks the dirs are still clean, and appends a record to a log it
   shares with the forker (MAP_SHARED, and MADV_DONTFORK here, so no candidate ever maps it). A candidate runs
   from C (run_candidate) and exits without returning through ctypes (whose return path alone writes a dozen
   pages). */

enum { WHY_OK, WHY_EOF, WHY_TIMEOUT, WHY_TOO_LARGE, WHY_NO_FORK, WHY_CPU = 6 };   /* records.py */
enum { STOP_NONE, STOP_DONE, STOP_DIRTY, STOP_FULL, STOP_UNAVAILABLE };
#define TAIL 120            /* output bytes a reply carries: sandbox.OutputSink.tail */
#define CHUNK 65536         /* bytes per read, as sandbox.wait_message */
#define RECORD 44           /* records.RECORD: "<iiiqqdii" */
#define LOG_HEAD 64         /* the log's header: written (int64), stop (int32) */
#define WAKE_RECORDS 16     /* batch.FLUSH_REPLIES */
#define WAKE_S 0.005        /* batch.FLUSH_S */

static double now(void) {   /* time.monotonic() */
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Memory the zygote writes between forks, left out of every fork (MADV_DONTFORK): no page of it is copied. */
static char *private_pages(size_t n) {
    char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (madvise(p, n, MADV_DONTFORK) != 0) { munmap(p, n); return NULL; }
    return p;
}

struct seen {               /* what a candidate sent: its report frame and the tail of its kept output */
    char *frame;
    long long cap, have, claimed, kept;
    char tail[TAIL];
    int tail_len;
};

/* Keep the last TAIL bytes of the first max_out bytes of output (the rest is read and discarded). */
static void keep_output(struct seen *s, const char *data, long long n, long long max_out) {
    long long room = max_out - s->kept;
    if (room <= 0) return;
    if (n > room) n = room;
    s->kept += n;
    if (n >= TAIL) {
        memcpy(s->tail, data + n - TAIL, TAIL);
        s->tail_len = TAIL;
        return;
    }
    int old = s->tail_len + n > TAIL ? TAIL - (int)n : s->tail_len;
    memmove(s->tail, s->tail + s->tail_len - old, old);
    memcpy(s->tail + old, data, n);
    s->tail_len = old + (int)n;
}

struct dirent64_raw { unsigned long long d_ino; long long d_off; unsigned short d_reclen; unsigned char d_type;
                      char d_name[]; };

/* ---- The CPU budget (budget.py): sandbox.tree_cpu, step for step ----
   A check's CPU time: its candidate's process tree, plus the zygote's other children (orphans of the check: the
   zygote is their subreaper) started no earlier than the candidate, and their trees; for each process its own CPU
   time and that of the children it reaped, from /proc/<pid>/stat (clock ticks). Read only once the check has run
   its budget in wall time (see watch), so an honest check never pays for it. */
#define TREE_MAX 512        /* sandbox.TREE_MAX */
#define CPU_STEP_S 0.01     /* sandbox.CPU_STEP_S */

/* pid's CPU ticks (utime + stime + cutime + cstime) and start time; -1 where it is gone. */
static long long stat_cpu(pid_t pid, unsigned long long *start) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long long f[20];   /* the fields after the command: f[0] is the state (skipped) */
    p++;
    for (int k = 0; k < 20; k++) {
        while (*p == ' ') p++;
        if (!*p) return -1;
        f[k] = k == 0 ? 0 : strtoull(p, &p, 10);
        if (k == 0) while (*p && *p != ' ') p++;
    }
    if (start) *start = f[19];
    return (long long)(f[11] + f[12] + f[13] + f[14]);
}

/* Appends pid's children (those of each of its threads) to kids[*n..cap). */
static void children_of(pid_t pid, pid_t *kids, int *n, int cap) {
    char path[96], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return;
    char ents[2048];
    long got;
    while ((got = syscall(SYS_getdents64, dfd, ents, sizeof ents)) > 0) {
        for (long off = 0; off < got; off += ((struct dirent64_raw *)(ents + off))->d_reclen) {
            const char *tid = ((struct dirent64_raw *)(ents + off))->d_name;
            if (tid[0] < '0' || tid[0] > '9') continue;
            snprintf(path, sizeof path, "/proc/%d/task/%s/children", (int)pid, tid);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            ssize_t r = read(fd, buf, sizeof buf - 1);
            close(fd);
            if (r <= 0) continue;
            buf[r] = 0;
            for (char *q = buf; *q && *n < cap;) {
                char *e;
                long v = strtol(q, &e, 10);
                if (e == q) break;
                kids[(*n)++] = (pid_t)v;
                q = e;
            }
        }
    }
    close(dfd);
}

/* CPU seconds used by first's check (see above); watcher: the process its orphans come back to. */
static double tree_cpu(pid_t watcher, pid_t first) {
    static pid_t seen[TREE_MAX + 1];
    unsigned long long first_start, start;
    if (stat_cpu(first, &first_start) < 0) return 0;
    int n = 0, done = 0;
    long long ticks = 0;
    seen[n++] = first;
    pid_t kids[TREE_MAX];
    int nk = 0;
    children_of(watcher, kids, &nk, TREE_MAX);
    for (int k = 0; k < nk && n < TREE_MAX; k++) {
        int dup = 0;
        for (int j = 0; j < n && !dup; j++) dup = seen[j] == kids[k];
        if (!dup && stat_cpu(kids[k], &start) >= 0 && start >= first_start) seen[n++] = kids[k];
    }
    while (done < n) {   /* seen[done..n) still to read: a breadth-first walk */
        pid_t pid = seen[done++];
        long long c = stat_cpu(pid, NULL);
        if (c < 0) continue;
        ticks += c;
        nk = 0;
        children_of(pid, kids, &nk, TREE_MAX);
        for (int k = 0; k < nk && n < TREE_MAX; k++) {
            int dup = 0;
            for (int j = 0; j < n && !dup; j++) dup = seen[j] == kids[k];
            if (!dup) seen[n++] = kids[k];
        }
    }
    return (double)ticks / (double)sysconf(_SC_CLK_TCK);
}

/* sandbox.wait_message: one frame on rep, draining out meanwhile, until it is complete, EOF, the wall-clock cap
   (deadline), or the check's processes (pid's, see tree_cpu) have used budget seconds of CPU time: read first at
   start + budget, then each time the rest of the budget could have run out. */
static int watch(int rep, int out, pid_t pid, double start, double budget, double deadline, long long max_out,
                 long long max_ans, struct seen *s, char *chunk) {
    struct pollfd p[2] = {{rep, POLLIN, 0}, {out, POLLIN, 0}};
    int nfds = 2;
    double check_at = start + budget;
    for (;;) {
        double t = now();
        if (t >= deadline) return WHY_TIMEOUT;
        if (t >= check_at) {
            double used = tree_cpu(getpid(), pid);
            if (used >= budget) return WHY_CPU;
            check_at = t + (budget - used > CPU_STEP_S ? budget - used : CPU_STEP_S);
        }
        double left = (check_at < deadline ? check_at : deadline) - t;
        struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
        if (ppoll(p, nfds, &ts, NULL) < 0) {
            if (errno == EINTR) continue;
            return WHY_EOF;
        }
        if (nfds == 2 && p[1].revents) {
            ssize_t n = read(out, chunk, CHUNK);
            if (n > 0) keep_output(s, chunk, n, max_out);
            else if (n == 0 || (errno != EINTR && errno != EAGAIN)) nfds = 1;   /* EOF: stop watching it */
        }
        if (p[0].revents) {
            long long room = s->cap - s->have;
            ssize_t n = read(rep, s->frame + s->have, room < CHUNK ? room : CHUNK);
            if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (n <= 0) return WHY_EOF;
            s->have += n;
            if (s->have >= 4) {
                const unsigned char *h = (const unsigned char *)s->frame;   /* codec._HEADER: ">I" */
                s->claimed = ((long long)h[0] << 24) | (h[1] << 16) | (h[2] << 8) | h[3];
                if (s->claimed > max_ans) return WHY_TOO_LARGE;
                if (s->have >= 4 + s->claimed) return WHY_OK;
            }
        }
    }
}


static int empty_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[2048];
    long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
    int empty = n >= 0;
    for (long off = 0; off < n && empty; off += ((struct dirent64_raw *)(buf + off))->d_reclen) {
        const char *name = ((struct dirent64_raw *)(buf + off))->d_name;
        empty = strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
    }
    close(fd);
    return empty;
}

/* State outside the dirs that a candidate can leave for the next one: extended attributes or inode flags on the
   scratch dir (its cwd, scratch_fd: it owns it), and SysV IPC objects where the worker has an IPC namespace of
   its own (all of them are then a sandbox's). Its atime/mtime are reset here after every check. 1: clean. */
static int private_ipc;
void set_private_ipc(int on) { private_ipc = on; }

#define FLAGS_SET_BY_OWNER 0x400000F0   /* FS_NODUMP_FL, FS_NOATIME_FL and neighbours (chattr), FS_CASEFOLD_FL */
static int rest_clean(int scratch_fd) {
    static const struct timespec epoch[2] = {{0, 0}, {0, 0}};
    futimens(scratch_fd, epoch);
    if (flistxattr(scratch_fd, NULL, 0) > 0) return 0;
    int flags = 0;
    if (ioctl(scratch_fd, FS_IOC_GETFLAGS, &flags) == 0 && (flags & FLAGS_SET_BY_OWNER)) return 0;
    if (private_ipc) {
        int info[64];   /* struct shm_info / msginfo / seminfo: the count of objects in use is an int in each */
        memset(info, 0, sizeof info);
        if (shmctl(0, SHM_INFO, (void *)info) >= 0 && info[0] != 0) return 0;        /* used_ids */
        memset(info, 0, sizeof info);
        if (msgctl(0, MSG_INFO, (void *)info) >= 0 && info[0] != 0) return 0;        /* msgpool */
        memset(info, 0, sizeof info);
        if (semctl(0, 0, SEM_INFO, (void *)info) >= 0 && info[7] != 0) return 0;     /* semusz */
    }
    return 1;
}

/* Are the scratch dir and the private tmp dirs as the forker left them? paths: NUL-separated; ids: per path
   (ino, dev, mode, size), -1 where not compared; a size of -1 means: no entries at all. */
static int still_clean(const char *paths, const long long *ids, int npaths) {
    for (int k = 0; k < npaths; k++, paths += strlen(paths) + 1) {
        const long long *e = ids + 4 * k;
        struct stat st;
        if (lstat(paths, &st) != 0) return 0;
        if ((e[0] >= 0 && (long long)st.st_ino != e[0]) || (e[1] >= 0 && (long long)st.st_dev != e[1])
                || (e[2] >= 0 && (long long)st.st_mode != e[2])) return 0;
        if (e[3] >= 0 ? (long long)st.st_size != e[3] : !empty_dir(paths)) return 0;
    }
    return 1;
}

static void put_record(char *b, int index, int why, int status, long long claimed, long long cap, double seconds,
                       int body_len, int tail_len) {
    int32_t head[3] = {index, why, status}, lens[2] = {body_len, tail_len};
    memcpy(b, head, 12);
    memcpy(b + 12, &claimed, 8);
    memcpy(b + 20, &cap, 8);
    memcpy(b + 28, &seconds, 8);
    memcpy(b + 36, lens, 8);
}

struct log_head { long long written; int stop; };

/* The zygote's loop over n checks. limits[5i..]: CPU budget and wall-clock cap in microseconds (budget.py), max
   output bytes, max answer bytes, uid (-1: none); fds[2i], fds[2i+1]: candidate i's report and output pipes (read ends; closes[2i..] the write ends it
   gets). Returns i in candidate i (sandboxed), -1 in the zygote when it stops (the log's header says why). */
static int watch_loop(int n, const long long *plans, const int *offsets, const int *closes, const int *fds,
                      const long long *limits, const char *paths, const long long *ids, int npaths,
                      char *log, long long log_size, int wake_fd) {
    struct log_head *head = (struct log_head *)log;
    long long max_ans = 0, written = 0;
    for (int i = 0; i < n; i++) if (limits[5 * i + 3] > max_ans) max_ans = limits[5 * i + 3];
    char *chunk = private_pages(CHUNK);
    struct seen s = {private_pages((size_t)max_ans + 4), max_ans + 4, 0, 0, 0, {0}, 0};
    if (!chunk || !s.frame) { head->stop = STOP_UNAVAILABLE; return -1; }
    bump_reserve();
    clear_uids(limits + 4, n, 5);   /* one killer per uid per batch, instead of one per check (kill_and_reap) */
    int stop = STOP_DONE, pending = 0;
    double since = 0;
    for (int i = 0; i < n; i++) {
        const long long *lim = limits + 5 * i;
        if (log_size - LOG_HEAD - written < RECORD + TAIL + 4 + lim[3]) { stop = STOP_FULL; break; }
        double start = now();
        pid_t pid = fork();
        if (pid == 0) {
            if (enter(plans + offsets[i]) != 0) _exit(70);
            bump_install();
            return i;
        }
        close(closes[2 * i]);
        close(closes[2 * i + 1]);
        int why = WHY_NO_FORK, status = 0;
        s.have = s.claimed = s.kept = 0;
        s.tail_len = 0;
        if (pid > 0) {
            why = watch(fds[2 * i], fds[2 * i + 1], pid, start, (double)lim[0] * 1e-6, start + (double)lim[1] * 1e-6,
                        lim[2], lim[3], &s, chunk);
            if (kill_and_reap(pid, lim[4], &status) != 0) { stop = STOP_NONE; break; }
        }
        close(fds[2 * i]);
        close(fds[2 * i + 1]);
        int dirty = !still_clean(paths, ids, npaths) || !rest_clean((int)plans[offsets[i]]);
        int body = why == WHY_OK ? (int)s.claimed : 0;
        char *rec = log + LOG_HEAD + written;
        put_record(rec, i, why, status, s.claimed, lim[3], now() - start, body, s.tail_len);
        memcpy(rec + RECORD, s.frame + 4, body);
        memcpy(rec + RECORD + body, s.tail, s.tail_len);
        written += RECORD + body + s.tail_len;
        __atomic_store_n(&head->written, written, __ATOMIC_RELEASE);   /* the forker may read it from here on */
        if (dirty) { stop = STOP_DIRTY; break; }
        if (pending++ == 0) since = now();
        if (pending >= WAKE_RECORDS || now() - since >= WAKE_S) {
            if (write(wake_fd, "w", 1) != 1) { stop = STOP_NONE; break; }   /* the forker is gone */
            pending = 0;
        }
    }
    __atomic_store_n(&head->stop, stop, __ATOMIC_RELEASE);
    return -1;   /* the zygote exits: the forker sees EOF on the wake pipe */
}

typedef void *(*call_t)(void *);
static call_t call_noargs;

/* 1 where candidates can be called from C (the interpreter exports PyObject_CallNoArgs), else 0. */
int direct_calls(void) {
    call_noargs = (call_t)dlsym(RTLD_DEFAULT, "PyObject_CallNoArgs");
    return call_noargs != NULL;
}

#ifdef WITH_PYTHON_H
/* ---- A candidate's answer, encoded here: codec.frame({"ok": codec.to_plain(value)}), byte for byte ----
   In Python, to_plain, the JSON encoder, the framing and os.write touch ~20 objects that exist before the fork
   (functions, modules, type objects, the encoder's state): each reference count written is a page copied. Here
   every object is read through borrowed references, so only the answer's own (fresh) objects and the output
   buffer are written. Anything but the common plain types (collections' dicts, types) or nesting at the depth
   limit goes back to Python (ENC_PYTHON), which also says why something is not plain data. */

enum { ENC_OK = 0, ENC_PYTHON = 1, ENC_FAILED = -1 };
#define MAX_DEPTH 100       /* codec.MAX_DEPTH */

struct out { char *buf; size_t len, cap; };

static int reserve(struct out *o, size_t n) {
    if (o->len + n <= o->cap) return 0;
    size_t cap = o->cap ? o->cap : 256;
    while (cap < o->len + n) cap *= 2;
    char *b = PyMem_Realloc(o->buf, cap);
    if (!b) return ENC_FAILED;
    o->buf = b;
    o->cap = cap;
    return 0;
}

static int out_put(struct out *o, const char *s, size_t n) {
    if (reserve(o, n)) return ENC_FAILED;
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    return 0;
}
#define PUT(o, lit) out_put(o, lit, sizeof(lit) - 1)

static int put_hex4(struct out *o, unsigned v) {   /* json's \uXXXX, lowercase */
    static const char hex[] = "0123456789abcdef";
    char e[6] = {'\\', 'u', hex[(v >> 12) & 15], hex[(v >> 8) & 15], hex[(v >> 4) & 15], hex[v & 15]};
    return out_put(o, e, 6);
}

/* json.encoder.encode_basestring_ascii */
static int put_str(struct out *o, PyObject *s) {
    if (PyUnicode_READY(s) < 0) return ENC_FAILED;
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    if (reserve(o, (size_t)n + 2)) return ENC_FAILED;
    o->buf[o->len++] = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        int r;
        if (c >= ' ' && c <= '~' && c != '\\' && c != '"') {
            if (reserve(o, 1)) return ENC_FAILED;
            o->buf[o->len++] = (char)c;
            continue;
        }
        switch (c) {
            case '\\': r = PUT(o, "\\\\"); break;
            case '"': r = PUT(o, "\\\""); break;
            case '\b': r = PUT(o, "\\b"); break;
            case '\f': r = PUT(o, "\\f"); break;
            case '\n': r = PUT(o, "\\n"); break;
            case '\r': r = PUT(o, "\\r"); break;
            case '\t': r = PUT(o, "\\t"); break;
            default:
                if (c >= 0x10000) {
                    c -= 0x10000;
                    r = put_hex4(o, 0xd800 | (c >> 10)) || put_hex4(o, 0xdc00 | (c & 0x3ff));
                } else {
                    r = put_hex4(o, c);
                }
        }
        if (r) return ENC_FAILED;
    }
    return PUT(o, "\"");
}

static int put_text(struct out *o, PyObject *text) {   /* a new str (a repr), consumed */
    if (!text) return ENC_FAILED;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    int r = s ? out_put(o, s, (size_t)n) : ENC_FAILED;
    Py_DECREF(text);
    return r;
}

static int put_double(struct out *o, double d) {   /* float.__repr__, and json's NaN/Infinity */
    if (isnan(d)) return PUT(o, "NaN");
    if (isinf(d)) return d > 0 ? PUT(o, "Infinity") : PUT(o, "-Infinity");
    char *s = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!s) return ENC_FAILED;
    int r = out_put(o, s, strlen(s));
    PyMem_Free(s);
    return r;
}

static int put_plain(struct out *o, PyObject *x, int depth);

static int put_tagged_start(struct out *o, const char *tag) {   /* {"t":"<tag>","v": */
    return PUT(o, "{\"t\":\"") || out_put(o, tag, strlen(tag)) || PUT(o, "\",\"v\":");
}

static int put_iterable(struct out *o, PyObject *x, int depth) {   /* [to_plain(v) for v in x] */
    PyObject *it = PyObject_GetIter(x), *item;
    if (!it) return ENC_FAILED;
    int r = PUT(o, "["), first = 1;
    while (!r && (item = PyIter_Next(it))) {
        r = first ? 0 : PUT(o, ",");
        if (!r) r = put_plain(o, item, depth + 1);
        first = 0;
        Py_DECREF(item);
    }
    Py_DECREF(it);
    if (!r && PyErr_Occurred()) r = ENC_FAILED;
    return r ? r : PUT(o, "]");
}

/* codec.to_plain(x, depth), encoded as json.dumps(..., separators=(",", ":")) encodes it. */
static int put_plain(struct out *o, PyObject *x, int depth) {
    PyTypeObject *t = Py_TYPE(x);
    if (x == Py_None) return PUT(o, "null");
    if (t == &PyBool_Type) return x == Py_True ? PUT(o, "true") : PUT(o, "false");
    if (t == &PyLong_Type) return put_text(o, PyLong_Type.tp_repr(x));
    if (t == &PyFloat_Type) return put_double(o, PyFloat_AS_DOUBLE(x));
    if (t == &PyUnicode_Type) return put_str(o, x);
    if (depth >= MAX_DEPTH) return ENC_PYTHON;
    if (t == &PyList_Type) {
        int r = PUT(o, "[");
        for (Py_ssize_t i = 0; !r && i < PyList_GET_SIZE(x); i++) {
            if (i) r = PUT(o, ",");
            if (!r) r = put_plain(o, PyList_GET_ITEM(x, i), depth + 1);
        }
        return r ? r : PUT(o, "]");
    }
    if (t == &PyTuple_Type || t == &PySet_Type || t == &PyFrozenSet_Type) {
        const char *tag = t == &PyTuple_Type ? "tuple" : t == &PySet_Type ? "set" : "frozenset";
        int r = put_tagged_start(o, tag);
        if (!r) r = put_iterable(o, x, depth);
        return r ? r : PUT(o, "}");
    }
    if (t == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        int r = put_tagged_start(o, "dict") || PUT(o, "["), first = 1;
        while (!r && PyDict_Next(x, &pos, &k, &v)) {
            r = (first ? 0 : PUT(o, ",")) || PUT(o, "[");
            if (!r) r = put_plain(o, k, depth + 1);
            if (!r) r = PUT(o, ",");
            if (!r) r = put_plain(o, v, depth + 1);
            if (!r) r = PUT(o, "]");
            first = 0;
        }
        return r ? r : PUT(o, "]}");
    }
    if (t == &PyBytes_Type) {
        static const char hex[] = "0123456789abcdef";
        Py_ssize_t n = PyBytes_GET_SIZE(x);
        const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(x);
        if (put_tagged_start(o, "bytes") || PUT(o, "\"") || reserve(o, 2 * (size_t)n)) return ENC_FAILED;
        for (Py_ssize_t i = 0; i < n; i++) {
            o->buf[o->len++] = hex[b[i] >> 4];
            o->buf[o->len++] = hex[b[i] & 15];
        }
        return PUT(o, "\"}");
    }
    if (t == &PyComplex_Type) {
        Py_complex c = PyComplex_AsCComplex(x);
        return put_tagged_start(o, "complex") || PUT(o, "[") || put_double(o, c.real) || PUT(o, ",")
               || put_double(o, c.imag) || PUT(o, "]}");
    }
    return ENC_PYTHON;
}

/* The report frame for a value: codec.frame({"ok": codec.to_plain(value)}) in o, or ENC_PYTHON / ENC_FAILED. */
static int encode_report(struct out *o, PyObject *value) {
    int r = PUT(o, "\0\0\0\0{\"ok\":");
    if (!r) r = put_plain(o, value, 0);
    if (!r) r = PUT(o, "}");
    if (r) return r < 0 ? ENC_FAILED : ENC_PYTHON;
    put_length((unsigned char *)o->buf, (uint32_t)(o->len - 4));
    return ENC_OK;
}

/* For tests: the frame encode_report makes of value (bytes), or None where Python would encode it. */
PyObject *report_frame(PyObject *value) {
    struct out o = {NULL, 0, 0};
    int r = encode_report(&o, value);
    PyObject *res = r == ENC_OK ? PyBytes_FromStringAndSize(o.buf, (Py_ssize_t)o.len) : (PyErr_Clear(), Py_NewRef(Py_None));
    PyMem_Free(o.buf);
    return res;
}

/* ---- A candidate's own random stream, without Python ----
   random's module-level generator (a _random.Random) is the zygote's, copied into every candidate; candidate i
   advances it i + 1 words, as random.getrandbits(32 * (i + 1)) would, so candidates of a batch draw different
   numbers. That call writes ~10 pages (the module, the bound method, a new int, code); this writes the
   generator's state only. The layout is CPython's (Modules/_randommodule.c); native.Helper checks it against
   getrandbits before using it. */
#define MT_N 624
#define MT_M 397
typedef struct { PyObject_HEAD int index; uint32_t state[MT_N]; } RandomState;

static void mt_refill(uint32_t *mt) {   /* genrand_uint32's refill of N words */
    static const uint32_t mag01[2] = {0x0U, 0x9908b0dfU};
    uint32_t y;
    int k;
    for (k = 0; k < MT_N - MT_M; k++) {
        y = (mt[k] & 0x80000000U) | (mt[k + 1] & 0x7fffffffU);
        mt[k] = mt[k + MT_M] ^ (y >> 1) ^ mag01[y & 0x1U];
    }
    for (; k < MT_N - 1; k++) {
        y = (mt[k] & 0x80000000U) | (mt[k + 1] & 0x7fffffffU);
        mt[k] = mt[k + (MT_M - MT_N)] ^ (y >> 1) ^ mag01[y & 0x1U];
    }
    y = (mt[MT_N - 1] & 0x80000000U) | (mt[0] & 0x7fffffffU);
    mt[MT_N - 1] = mt[MT_M - 1] ^ (y >> 1) ^ mag01[y & 0x1U];
}

/* Advance generator r by `words` 32-bit words. */
void random_skip(PyObject *r, int words) {
    RandomState *g = (RandomState *)r;
    for (; words > 0; words--) {
        if (g->index >= MT_N) {
            mt_refill(g->state);
            g->index = 0;
        }
        g->index++;
    }
}

/* Write the frame in o to the report channel (children.REPORT_FD) and end the candidate. */
static void send_report(struct out *o) {
    const char *p = o->buf;
    size_t left = o->len;
    while (left) {
        ssize_t w = write(3, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) _exit(70);
        p += w;
        left -= (size_t)w;
    }
    _exit(0);
}

/* children._describe's report of the exception being raised: {"err": [type name, str(exc)[:200]]}. */
static void report_exception(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (!type) _exit(70);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *name = PyType_GetName((PyTypeObject *)type);
    PyObject *text = value ? PyObject_Str(value) : NULL;     /* may run the candidate's own __str__: it is its process */
    if (!text) {
        PyErr_Clear();
        text = PyUnicode_FromString("<unprintable>");
    } else if (PyUnicode_GET_LENGTH(text) > 200) {
        text = PyUnicode_Substring(text, 0, 200);
    }
    struct out o = {NULL, 0, 0};
    if (!name || !text || PUT(&o, "\0\0\0\0{\"err\":[") || put_str(&o, name) || PUT(&o, ",") || put_str(&o, text)
            || PUT(&o, "]}")) _exit(70);
    put_length((unsigned char *)o.buf, (uint32_t)(o.len - 4));
    send_report(&o);
}

/* The report of value, encoded here or by report_in_python(value) (see put_plain); ends the candidate. */
static void report_value(PyObject *value, PyObject *report_in_python) {
    struct out o = {NULL, 0, 0};
    if (encode_report(&o, value) == ENC_OK) send_report(&o);
    PyErr_Clear();
    _exit(PyObject_CallOneArg(report_in_python, value) ? 0 : 70);
}

/* children.candidate_value + its report, without Python in between: run (code, entry, namespace template) — exec
   the program's code in a copy of the template, call its entry function — and report. */
static void run_program(PyObject *job, PyObject *report_in_python) {
    PyObject *code = PyTuple_GET_ITEM(job, 0), *entry = PyTuple_GET_ITEM(job, 1);
    PyObject *ns = PyDict_Copy(PyTuple_GET_ITEM(job, 2));
    if (!ns || !PyEval_EvalCode(code, ns, ns)) report_exception();
    PyObject *fn = PyDict_GetItemWithError(ns, entry);
    if (!fn && PyErr_Occurred()) report_exception();
    if (!fn || !PyCallable_Check(fn)) {
        PyErr_Format(PyExc_NameError, "the program defines no %U()", entry);
        report_exception();
    }
    Py_INCREF(fn);   /* the call may take it out of ns */
    PyObject *value = PyObject_CallNoArgs(fn);
    if (!value) report_exception();
    report_value(value, report_in_python);
}

/* Candidate i, sandboxed. body: a (code, entry, namespace) tuple for run_program, or a callable that runs the
   program and returns [value] (or writes its own error report and returns None). Where rng is not None
   (random's generator), it is advanced first (see random_skip). */
static void run_candidate(int i, PyObject *body, PyObject *report_in_python, PyObject *rng) {
    if (rng != Py_None) random_skip(rng, i + 1);
    if (PyTuple_CheckExact(body) && PyTuple_GET_SIZE(body) == 3) run_program(body, report_in_python);
    PyObject *got = PyObject_CallNoArgs(body);
    if (!got) _exit(70);
    if (got == Py_None) _exit(0);
    if (!PyList_CheckExact(got) || PyList_GET_SIZE(got) != 1) _exit(70);
    report_value(PyList_GET_ITEM(got, 0), report_in_python);
}

int encodes_reports(void) { return 1; }
#else
int encodes_reports(void) { return 0; }
#endif

/* Fork a watching zygote. In it: watch_loop, then _exit. In candidate i: bodies[i]() (Python; the forker's
   ctypes call holds the GIL, which the fork copies) and _exit; where this helper encodes reports and
   report_in_python is not None, bodies[i]() returns [value] and run_candidate reports it (report_in_python: the
   fallback; rng: see run_candidate). Returns the zygote's pid to the forker, or -1. */
static pid_t start_zygote(int n, const long long *plans, const int *offsets, const int *closes, const int *fds,
                          const long long *limits, const char *paths, const long long *ids, int npaths,
                          char *log, long long log_size, int wake_fd, int forker_end, void **bodies,
                          void *report_in_python, void *rng) {
    pid_t forker = getpid(), z = fork();
    if (z != 0) return z;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != forker) _exit(0);
    close(forker_end);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {   /* orphans of candidates come back to us */
        ((struct log_head *)log)->stop = STOP_UNAVAILABLE;
        _exit(0);
    }
    if (madvise(log, log_size, MADV_DONTFORK) != 0) {   /* no candidate may write records */
        ((struct log_head *)log)->stop = STOP_UNAVAILABLE;
        _exit(0);
    }
    int i = watch_loop(n, plans, offsets, closes, fds, limits, paths, ids, npaths, log, log_size, wake_fd);
    if (i < 0) _exit(0);
#ifdef WITH_PYTHON_H
    if (report_in_python != Py_None) run_candidate(i, (PyObject *)bodies[i], (PyObject *)report_in_python, rng);
#else
    (void)report_in_python;
    (void)rng;
#endif
    _exit(call_noargs(bodies[i]) ? 0 : 70);
}

/* Whole records in [p, p + len): RECORD's lengths say where each ends. */
static long long count_records(const char *p, long long len) {
    long long k = 0, pos = 0;
    while (pos + RECORD <= len) {
        int32_t lens[2];
        memcpy(lens, p + pos + 36, 8);
        pos += RECORD + lens[0] + lens[1];
        k++;
    }
    return k;
}

/* One raw message to the worker: forker._send_records' framing (">I" length with the top bit set, then bytes). */
static int send_raw(int sock, const char *p, long long len) {
    unsigned char h[4];
    put_length(h, (uint32_t)len | (1u << 31));
    struct iovec v[2] = {{h, 4}, {(void *)p, (size_t)len}};
    size_t left = 4 + (size_t)len;
    while (left) {
        ssize_t w = writev(sock, v, 2);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        left -= (size_t)w;
        for (int k = 0; k < 2; k++) {                    /* skip what was written */
            size_t d = (size_t)w < v[k].iov_len ? (size_t)w : v[k].iov_len;
            v[k].iov_base = (char *)v[k].iov_base + d;
            v[k].iov_len -= d;
            w -= (ssize_t)d;
        }
    }
    return 0;
}

/* The forker's whole part while a watching zygote runs, in C: what the forker writes while a zygote shares its
   memory is copied page by page (Python writes many), so it only closes its copies of the candidates' pipe ends
   (all_fds), then passes the log's records on to the worker (sock) each time the zygote wakes it, until the
   zygote exits. The records written after its last wake-up are held back (*held: where they start) for the
   forker to send once it has cleaned up. Returns how many records there were; -1 if the zygote could not be
   forked. *zpid: the zygote, for the forker to reap. */
long long run_watching_zygote(int n, const long long *plans, const int *offsets, const int *closes, const int *fds,
                              const long long *limits, const char *paths, const long long *ids, int npaths,
                              char *log, long long log_size, void **bodies, void *report_in_python, void *rng,
                              const int *all_fds, int nfds, int sock, long long *held, int *zpid) {
    int wake[2];
    if (!call_noargs || pipe2(wake, O_CLOEXEC) != 0) return -1;
    pid_t z = start_zygote(n, plans, offsets, closes, fds, limits, paths, ids, npaths, log, log_size, wake[1],
                           wake[0], bodies, report_in_python, rng);
    *zpid = z;
    close(wake[1]);
    for (int k = 0; k < nfds; k++) close(all_fds[k]);
    if (z < 0) { close(wake[0]); return -1; }
    const struct log_head *head = (const struct log_head *)log;
    long long consumed = 0, records = 0;
    for (;;) {
        char buf[64];
        ssize_t r = read(wake[0], buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        long long written = __atomic_load_n(&head->written, __ATOMIC_ACQUIRE);
        records += count_records(log + LOG_HEAD + consumed, written - consumed);
        if (r <= 0) break;                               /* the zygote is gone: hold back the rest */
        if (written > consumed && send_raw(sock, log + LOG_HEAD + consumed, written - consumed) != 0) break;
        consumed = written;
    }
    close(wake[0]);
    *held = consumed;
    return records;
}
