"""Multi-step arithmetic: puzzles whose answer needs a chain of intermediate results (undo each operation in
turn), for decompositional distillation (``distill_ray/decomposition.py`` turns the answer expression into
numbered sub-questions). A module of its own, registered last, so adding it left the other families' round-robin
order as it was."""

from __future__ import annotations

import random

from distill_ray.tasks.families.core import family


@family("chain", "arithmetic", "int")
def chain(rng: random.Random, d: int) -> tuple[str, str]:
    # Difficulty = operations to undo: 2, 3, 4; the answer undoes them innermost-last, one step per operation.
    a, b, x = rng.randint(1, 20), rng.randint(2, 9), rng.randint(0, 30)
    if d == 1:
        return f"(x + {a}) * {b} == {(x + a) * b}", f"{(x + a) * b} // {b} - {a}"
    c = rng.randint(1, 50)
    if d == 2:
        t = (x + a) * b - c
        return f"(x + {a}) * {b} - {c} == {t}", f"({t} + {c}) // {b} - {a}"
    e = rng.randint(2, 5)
    t = ((x - a) * b + c) * e
    return f"((x - {a}) * {b} + {c}) * {e} == {t}", f"({t} // {e} - {c}) // {b} + {a}"
