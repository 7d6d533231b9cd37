"""Reading /proc, with nothing else imported: the pool (the trusted parent, which must not load the sandbox's
ctypes glue) and the sandbox both use it."""

from __future__ import annotations

import os


def children_of(pid: int) -> list[int]:
    """pid's children, those of each of its threads (/proc/<pid>/task/<tid>/children)."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out
