"""A verifier worker process: started by the Verifier with only LD_BIND_NOW=1, serves checks over stdin/stdout.

Start-up order matters: namespaces first (inherited by everything forked later), then the clean forker (before
any check, so its memory never holds one), then the hello with the active protections.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings

from distill_ray.verify import native, sandbox
from distill_ray.verify.checks import CheckRunner
from distill_ray.verify.codec import read_msg, write_msg
from distill_ray.verify.forker import ForkerClient

# Preloaded so candidates do not pay for these common imports on every check (forks share the pages).
import collections, functools, heapq, itertools, math, random, re, string, typing  # noqa: E401,F401,E402


def _site_builtins() -> None:
    """exit() and quit(), which `site` defines and -S (see pool._BOOT) leaves out: model-written code calls them."""
    import builtins
    import _sitebuiltins
    builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
    builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")


def main() -> None:
    _site_builtins()
    sys.set_int_max_str_digits(0)
    # The forker and judges compile untrusted sources: their SyntaxWarnings must not reach the host's stderr.
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGINT, signal.SIG_DFL)   # inherited by every sandboxed child (SIGPIPE stays ignored)
    os.environ.clear()                             # candidates see an empty os.environ
    sandbox.prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL)   # die with the Verifier
    setup = read_msg(0)
    limits = setup["limits"]
    sandbox.NATIVE = native.load(setup.get("native"))   # before the mount namespace may hide its path
    protections = sandbox.setup_worker_isolation(limits)
    protections["native_fork"] = ("off: pure-Python fork loop and sandbox entry" if sandbox.NATIVE is None else
                                  "on (C fork loop and sandbox entry; a watching zygote for checks without a fresh"
                                  " judge)" if sandbox.NATIVE.run_watching_zygote else
                                  "on (C fork loop and sandbox entry)")
    forker = ForkerClient()
    runner = CheckRunner(limits, forker, protections)
    write_msg(1, {"hello": protections, "pid": os.getpid()})
    while (chunk := read_msg(0)) is not None:
        if not forker.alive():   # noticed before this chunk runs: none of it ran
            runner.lost = ["forker died", -1]   # (-1: it was running none of them)
        else:
            for ready in runner.run_many(chunk):   # lists of (index, verdict): one message for several
                write_msg(1, ready)
        if runner.lost is not None or not forker.alive():
            # The checks without a verdict go back to the Verifier, which starts a fresh worker (with a fresh
            # forker) for them; the one the forker was running, if known, runs there alone.
            write_msg(1, {"lost": runner.lost or ["forker died", -1]})
            _shut_down(forker, runner, 3)
    _shut_down(forker, runner, 0)


def _shut_down(forker: ForkerClient, runner: CheckRunner, code: int) -> None:
    """Exit, leaving nothing behind: every process this worker started is ended and reaped first (the persistent
    judge, the forker, whatever a candidate left), so that none outlives it as another process's child. Bounded
    (~32 s; the Verifier waits pool.CLOSE_GRACE_S); exit code 4 where something could not be ended (the Verifier
    then sweeps the sandbox uids itself: pool._sweep)."""
    runner.sat_judge.close()
    forker.close(grace_s=2.0 if code == 0 else 0.0)
    if not runner.end_sandboxes() and code == 0:
        code = 4
    os._exit(code)


if __name__ == "__main__":
    main()
