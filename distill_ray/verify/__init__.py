"""Sandboxed verification of untrusted, model-written Python: P3 puzzles, GSM8K programs, assert tests.

Usage::

    from distill_ray.verify import Check, Verifier
    with Verifier(workers=2) as v:
        verdicts = v.verify([Check("gsm8k", "def solution():\\n    return 6 * 7", expected=42)])

Threat model
------------
Candidate programs (and, for synthetic P3, the `sat` puzzles and test code) are hostile: by accident (infinite
loops, memory blow-ups, fork storms, floods of output, deleting files) or by construction (making the check lie).
A fake pass poisons training data, so the design is: the process that runs candidate code only ever returns
*plain data* (exact builtin types, see `codec`) and never reports a verdict; expected answers and tests never
enter it; type checks and comparisons run in the trusted worker; `sat` and test code run in a *separate* fresh
process (another uid) where the candidate's patched builtins, trace hooks or lying objects do not exist — test
code calls candidate functions through stubs that send plain arguments over a pipe and get plain results back.

Processes: Verifier (caller) -> worker (exec'd with only LD_BIND_NOW=1; one per `workers`) -> a clean forker
(forked at worker start-up, before any check, so candidates forked from it find no expected answer or test in
memory) -> one candidate process per check. p3 and gsm8k checks reach the forker in batches; per batch it forks a
zygote whose only job is to fork the candidates one at a time (`batch.py`: after a fork every page either side
writes is copied, so the process that forks must do almost nothing else), while the forker watches each one
(deadline, output cap, kill, reap, emptying the reused scratch dir) and streams back only plain data (the
candidate's answer message, wait status, output tail). Where the C helper is built (`zygote.c`) and no check of
the batch needs a fresh judge, the zygote watches its candidates itself and never runs Python
(`watching_zygote.py`): it forks, watches, kills and reaps each candidate and whatever it started, checks the
scratch dir, and writes one record per check to a log shared with the forker (no candidate maps it); each
candidate runs its program and encodes its answer from C. The worker does the type checks and comparisons. `sat`:
when the check says `trusted_sat` (a curated sat: P3, our puzzle families) it runs in the worker's persistent
judge process (`judge.py`: forked by the worker, its own uid, time limit per call, killed and replaced when a call
runs out), so the check costs one fork; a model-written sat (the default) runs in a fresh judge process that the
zygote forks after the candidate (prepared before the zygote was forked, so from memory no candidate code ran
in) and that gets the answer as plain data over a pipe. Where a C compiler is available, the zygote's fork loop
and the sandbox entry run as C (`native.py`; pure Python otherwise, same steps). For asserts the worker forks
the judge process (test code is secret from candidates) and talks to a candidate spawned by the forker.

Per sandboxed process: own process group; fds 0-2 to /dev/null and a capped output pipe, fd 3 its report pipe,
nothing else; a private cwd (the forker's scratch dir, entered by fd and emptied after every check, or replaced
by a fresh one if a candidate moved or locked it; removed when the forker exits); RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE, no core
dumps; no_new_privs; parent-death signal; an empty os.environ. As root additionally: an unprivileged uid unique
to the worker (so RLIMIT_NPROC applies, other users' files and /proc entries are out of reach, and `kill(-1)`
under that uid ends every process it started), and per worker, when the kernel permits: an empty network
namespace, a private IPC namespace, and a mount namespace with private tmpfs on /tmp, /var/tmp and /dev/shm
(wiped after each check). `Verifier.protections` says which are active and why not. When the verdict is in,
every process of the check is SIGKILLed (process group + uid-wide kill, done by a throwaway killer process, so no
trusted process ever runs as a candidate's uid) and reaped.
The time budget is CPU time, so verdicts do not depend on the machine's load (`budget.py`). (A C zygote kills the uid once per batch, and after a
check only where it has any child left once the candidate is reaped: every process of the uid is then below it,
see zygote.c, kill_and_reap.)

Trusted code bounds what it does with candidate data: messages are decoded within limits on nesting, values and
int digits (`codec`), verdict text is made UTF-8-safe, and dirs a candidate leaves are removed iteratively. A forker
that dies or stalls hands its unanswered checks back: the one it was running runs again alone on a fresh worker
(an error if that one is lost too), the others as usual. A worker reaps everything it started before it exits
(and whatever comes back to it, as their subreaper, from its sandboxes), and the Verifier, once a worker is gone,
ends and reaps what of it came back to the Verifier's process (a subreaper's): nothing it started is left, alive
or as a zombie, once it is closed (also at interpreter exit) or its worker is killed.

Not covered: reads of world-readable files; CPU/memory side channels; a candidate reading the programs, answers
and p3 `sat` sources of earlier checks of the same worker, and the programs and sats of the other checks of its
batch, from the memory it was forked with (never expected answers or test code, which stay in the worker); a
kernel exploit. A trusted sat is trusted not to be hostile: it shares its judge process with other trusted
sats, so one that, say, patches a builtin would affect the next ones (only ever mark curated sats trusted). Without root, there is no uid
drop (candidates run as the caller's user: they can signal its processes and RLIMIT_NPROC counts all of them).

JSONL front end: `distill_ray.verify.jsonl` (`verify_jsonl`, and `python -m distill_ray.verify IN --output OUT`).

Statuses
--------
- ``pass``: the answer was obtained and is correct (p3: right exact type and ``sat(answer) is True``;
  gsm8k: an int/float equal to expected within 1e-6; asserts: the tests ran to the end without raising).
- ``fail``: an answer was obtained (or the tests ran) and it is wrong: wrong value or type, sat returned
  something other than True or raised, a test raised (AssertionError or anything else).
- ``timeout``: the check's budget ran out: ``timeout_s`` seconds of CPU time (the candidate and every process it
  starts, summed; an untrusted sat's judge gets as much again), its wall-clock cap (``budget.wall_cap``:
  3 x ``timeout_s`` + 1 s, for programs that sleep or block), or a process's RLIMIT_CPU (``cpu_s``).
- ``memory``: the candidate hit the address-space limit (MemoryError).
- ``error``: no answer: the program does not compile, raised, exited (``sys.exit``, ``os._exit``), was killed,
  returned something that is not plain data (e.g. an object with a lying ``__eq__``), or a harness problem.
- ``invalid``: the check itself is malformed (unknown kind, missing sat/expected/tests, unsupported ans_type,
  sat that does not define ``sat``).
- ``answered``: a gsm8k check with ``record_answer`` and no expected number returned a finite number (``answer``);
  there is nothing to judge it against, so it never passes (the pipeline's vote decides such rows).
"""

from typing import TYPE_CHECKING

__all__ = ["Check", "SandboxLimits", "Verdict", "Verifier", "verify_one", "verify_jsonl"]

if TYPE_CHECKING:
    from distill_ray.verify.jsonl import verify_jsonl
    from distill_ray.verify.pool import Verifier, verify_one
    from distill_ray.verify.schema import Check, SandboxLimits, Verdict

_WHERE = {"Check": "schema", "SandboxLimits": "schema", "Verdict": "schema", "Verifier": "pool",
          "verify_one": "pool", "verify_jsonl": "jsonl"}


def __getattr__(name: str):
    # Lazy, so that the worker and the forker (which import submodules) do not load the caller-side pool and
    # its imports (subprocess, threading, ...): the forker's size is what every candidate fork pays for.
    if name in _WHERE:
        import importlib
        value = getattr(importlib.import_module(f"distill_ray.verify.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
