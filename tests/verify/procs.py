"""The machine's processes as the verifier tests look at them: each test filters them down to what its own
workers started (another verifier may run beside the suite)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from distill_ray.verify.sandbox import UID_BASE


def sandbox_uids(workers: list[int]) -> set[int]:
    """The sandbox uids of these workers: UID_BASE + 3 * worker pid, +1 fresh judges, +2 persistent judge."""
    return {UID_BASE + 3 * w + k for w in workers for k in range(3)}


def processes() -> Iterator[tuple[int, str, int, int]]:
    """(pid, state letter, session id, real uid) of every process that can be read now."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/status") as f:
                uid = int(next(line for line in f if line.startswith("Uid:")).split()[1])
        except (OSError, StopIteration, ValueError):
            continue
        yield int(name), fields[0], int(fields[3]), uid
