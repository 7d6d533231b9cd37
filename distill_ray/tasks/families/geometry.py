"""Geometry families: rectangles, right triangles, lattice points."""

from __future__ import annotations

import random

from distill_ray.tasks.families.core import family


def _triple(rng: random.Random, largest: int) -> tuple[int, int, int]:
    """A Pythagorean triple (a, b, c), a^2 + b^2 = c^2, from Euclid's formula times k."""
    m = rng.randint(2, largest)
    n = rng.randint(1, m - 1)
    k = rng.randint(1, 3)
    return k * (m * m - n * n), k * 2 * m * n, k * (m * m + n * n)


@family("rectangle", "geometry", "List[int]")
def rectangle(rng: random.Random, d: int) -> tuple[str, str]:
    w, h = rng.randint(1, 12 if d == 1 else 60), rng.randint(1, 12 if d == 1 else 60)
    area = w * h
    if d == 1:
        s = w + h
        return (f"len(li) == 2 and li[0] * li[1] == {area} and sum(li) == {s}",
                f"next([w, {s} - w] for w in range(1, {s}) if w * ({s} - w) == {area})")
    if d == 2:
        p = 2 * (w + h)
        return (f"len(li) == 2 and li[0] * li[1] == {area} and 2 * (li[0] + li[1]) == {p} and li[0] <= li[1]",
                f"next([w, {p} // 2 - w] for w in range(1, {p} // 2) if w * ({p} // 2 - w) == {area})")
    diag = w * w + h * h   # squared diagonal and area pin the sides down (up to order)
    return (f"len(li) == 2 and li[0] * li[1] == {area} and li[0] ** 2 + li[1] ** 2 == {diag} and li[0] > 0",
            f"next([w, {area} // w] for w in range(1, {area} + 1) if {area} % w == 0 "
            f"and w * w + ({area} // w) ** 2 == {diag})")


@family("right_triangle", "geometry", "int")
def right_triangle(rng: random.Random, d: int) -> tuple[str, str]:
    a, b, c = _triple(rng, 4 if d == 1 else 12)
    if d == 1:   # hypotenuse from the legs
        return f"x > 0 and x * x == {a} * {a} + {b} * {b}", f"round(({a} ** 2 + {b} ** 2) ** 0.5)"
    if d == 2:   # the other leg
        return f"x > 0 and x * x + {a} * {a} == {c} * {c}", f"round(({c} ** 2 - {a} ** 2) ** 0.5)"
    # the perimeter (a + b - c also satisfies the equation; both are fine answers)
    return (f"x > 0 and (x - {a} - {b}) ** 2 == {a} * {a} + {b} * {b}",
            f"{a} + {b} + round(({a} ** 2 + {b} ** 2) ** 0.5)")


@family("lattice_point", "geometry", "List[int]")
def lattice_point(rng: random.Random, d: int) -> tuple[str, str]:
    x0, y0 = rng.randint(-20, 20), rng.randint(-20, 20)
    if d == 1:   # Manhattan distance
        dist = rng.randint(1, 20)
        return (f"len(li) == 2 and abs(li[0] - {x0}) + abs(li[1] - {y0}) == {dist}",
                f"[{x0} + {dist}, {y0}]")
    if d == 2:   # on a circle, off both axes through its centre (a triple's legs guarantee one exists)
        a, b, c = _triple(rng, 5)
        r2 = c * c
        span = f"range(-int({r2} ** 0.5), int({r2} ** 0.5) + 1)"
        return (f"len(li) == 2 and (li[0] - {x0}) ** 2 + (li[1] - {y0}) ** 2 == {r2} "
                f"and li[0] != {x0} and li[1] != {y0}",
                f"next([{x0} + u, {y0} + v] for u in {span} for v in {span} if u * u + v * v == {r2} and u and v)")
    # strictly between two lattice points on their segment (k >= 2 steps apart, so one exists)
    dx, dy, k = rng.randint(1, 9), rng.randint(-9, 9), rng.randint(2, 5)
    x1, y1 = x0 + k * dx, y0 + k * dy
    return (f"len(li) == 2 and (li[0] - {x0}) * ({y1} - {y0}) == (li[1] - {y0}) * ({x1} - {x0}) "
            f"and {x0} < li[0] < {x1}",
            f"next([u, {y0} + (u - {x0}) * ({y1} - {y0}) // ({x1} - {x0})] for u in range({x0} + 1, {x1}) "
            f"if (u - {x0}) * ({y1} - {y0}) % ({x1} - {x0}) == 0)")
