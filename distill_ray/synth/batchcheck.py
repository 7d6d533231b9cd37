"""Many trusted puzzles in one sandboxed process: the fast path for our procedural families.

Per check the sandbox forks twice (candidate and sat judge), about 3-10 ms of a core each; procedural
puzzles are tiny, so that fork cost is nearly all of their verification. Their ``sat`` and ``sol`` are both our
own code (trusted), so nothing needs ``sat`` to run apart from ``sol``: one sandboxed ``gsm8k``-kind check execs
``k`` pairs, each in a fresh namespace, checks the exact answer type and ``sat(ans) is True``, and returns how
many held. The sandbox still bounds time, memory and side effects. A batch that does not return ``k`` (a wrong
answer, an exception, a timeout) is re-verified one puzzle at a time through the regular P3 path, which names
the failing puzzle(s) and their status. Teacher-written puzzles never take this path.
"""

from __future__ import annotations

PER_PUZZLE_S = 0.5

PROGRAM = '''from typing import List

PAIRS = {pairs!r}


def _type_ok(value, ans_type):
    if ans_type.startswith("List[") and ans_type.endswith("]"):
        return type(value) is list and all(_type_ok(v, ans_type[5:-1]) for v in value)
    return type(value) is {{"int": int, "str": str, "float": float, "bool": bool}}[ans_type]


def solution():
    held = 0
    for sat_src, sol_src, ans_type in PAIRS:
        namespace = {{"List": List}}
        exec(sat_src, namespace)
        exec(sol_src, namespace)
        answer = namespace["sol"]()
        if _type_ok(answer, ans_type.replace(" ", "")) and namespace["sat"](answer) is True:
            held += 1
    return held
'''


def batch_check(pairs: list[tuple[str, str, str]], timeout_s: float):
    """One Check verifying every (sat, sol, ans_type) of ``pairs``; it passes only if all of them hold."""
    from distill_ray.verify import Check
    from distill_ray.verify.schema import MAX_TIMEOUT_S

    # One puzzle's budget plus 0.5 s per puzzle (ours take ~1-50 ms, more on a loaded machine): a hanging puzzle
    # costs one such wait, then the one-by-one pass finds it.
    return Check("gsm8k", PROGRAM.format(pairs=pairs), expected=float(len(pairs)),
                 timeout_s=min(MAX_TIMEOUT_S, timeout_s + PER_PUZZLE_S * len(pairs)))
