"""A verifier worker process: started by the Verifier with an empty environment, serves checks over stdin/stdout.

Start-up order matters: namespaces first (inherited by everything forked later), then the clean forker (before
any check, so its memory never holds one), then the hello with the active protections.
"""

from __future__ import annotations

import os
import signal
import sys

from distill_ray.verify import sandbox
from distill_ray.verify.checks import CheckRunner
from distill_ray.verify.codec import read_msg, write_msg
from distill_ray.verify.forker import ForkerClient

# Preloaded so candidates do not pay for these common imports on every check (forks share the pages).
import collections, functools, heapq, itertools, math, random, re, string, typing  # noqa: E401,F401,E402


def main() -> None:
    sys.set_int_max_str_digits(0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)   # inherited by every sandboxed child (SIGPIPE stays ignored)
    os.environ.clear()                             # exec'd with env={}; drop what Python itself added
    sandbox.prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL)   # die with the Verifier
    setup = read_msg(0)
    limits = setup["limits"]
    protections = sandbox.setup_worker_isolation(limits)
    forker = ForkerClient()
    runner = CheckRunner(limits, forker, protections)
    write_msg(1, {"hello": protections, "pid": os.getpid()})
    while (batch := read_msg(0)) is not None:
        for index, result in runner.run_many(batch):
            write_msg(1, [index, result])
        if not forker.alive():
            os._exit(3)   # the Verifier sees EOF and starts a fresh worker (with a fresh forker)


if __name__ == "__main__":
    main()
