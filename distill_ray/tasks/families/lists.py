"""List and combinatorics families."""

from __future__ import annotations

import random

from distill_ray.tasks.families.core import family


# ---------------------------------------------------------------- lists

@family("const_list", "lists", "List[int]")
def const_list(rng: random.Random, d: int) -> tuple[str, str]:
    c, n = rng.randint(0, 20), rng.randint(2, 8)
    if d == 1:
        return f"len(li) == {n} and all(v == {c} for v in li)", f"[{c}] * {n}"
    e, n = rng.randint(10, 99), rng.randint(4, 12)
    if d == 2:
        k = rng.randint(1, n - 1)
        return (f"len(li) == {n} and all(v == {c} for v in li[:{k}]) and all(v == {e} for v in li[{k}:])",
                f"[{c}] * {k} + [{e}] * ({n} - {k})")
    return (f"len(li) == {n} and all(v == {c} for v in li[::2]) and all(v == {e} for v in li[1::2])",
            f"([{c}, {e}] * {n})[:{n}]")


@family("range_list", "lists", "List[int]")
def range_list(rng: random.Random, d: int) -> tuple[str, str]:
    n = rng.randint(2, 8 if d == 1 else 15)
    a, k = rng.randint(0, 20) if d == 1 else rng.randint(-50, 50), rng.randint(2, 9)
    if d == 1:
        return f"len(li) == {n} and all(li[i] == {a} + i for i in range({n}))", f"list(range({a}, {a} + {n}))"
    if d == 2:
        return (f"len(li) == {n} and all(li[i] == {a} + {k} * i for i in range({n}))",
                f"list(range({a}, {a} + {k} * {n}, {k}))")
    return (f"len(li) == {n} and all(li[i] == {a} + {k} * i * i for i in range({n}))",
            f"[{a} + {k} * i * i for i in range({n})]")


@family("list_sum", "lists", "List[int]")
def list_sum(rng: random.Random, d: int) -> tuple[str, str]:
    n = rng.randint(2, 5 if d == 1 else 8)
    if d == 1:
        t = rng.randint(1, 50)
        return f"len(li) == {n} and sum(li) == {t}", f"[{t}] + [0] * ({n} - 1)"
    if d == 2:
        # range(n - 1) sums to s; a total above s + n - 2 makes the last element differ from the others.
        t = (n - 1) * (n - 2) // 2 + n - 1 + rng.randint(0, 100)
        return (f"len(set(li)) == {n} and len(li) == {n} and sum(li) == {t}",
                f"list(range({n} - 1)) + [{t} - sum(range({n} - 1))]")
    t = n * (n - 1) // 2 + n + rng.randint(0, 200)
    return (f"len(li) == {n} and sum(li) == {t} and li[0] > 0 and all(a < b for a, b in zip(li, li[1:]))",
            f"list(range(1, {n})) + [{t} - sum(range(1, {n}))]")


@family("sort_list", "lists", "List[int]")
def sort_list(rng: random.Random, d: int) -> tuple[str, str]:
    values = rng.sample(range(1, 100), rng.randint(3, 4 if d == 1 else 7))
    if d == 1:
        return f"li == sorted({values})", f"sorted({values})"
    ordered = sorted(values)
    if d == 2:
        return f"sorted(li) == {ordered} and li[0] == {ordered[-1]}", f"sorted({ordered}, reverse=True)"
    return (f"sorted(li) == {ordered} and all(a > b for a, b in zip(li, li[1:]))",
            f"sorted({ordered}, reverse=True)")


@family("list_extremes", "lists", "List[int]")
def list_extremes(rng: random.Random, d: int) -> tuple[str, str]:
    hi, n = rng.randint(0, 50), rng.randint(2, 6)
    if d == 1:
        return f"len(li) == {n} and max(li) == {hi}", f"[{hi}] * {n}"
    lo = hi - rng.randint(1, 40)
    if d == 2:
        return f"len(li) == {n} and max(li) == {hi} and min(li) == {lo}", f"[{hi}] + [{lo}] * ({n} - 1)"
    r, t = hi - lo, hi + lo
    return (f"len(li) == 2 and max(li) - min(li) == {r} and sum(li) == {t}",
            f"[({t} + {r}) // 2, ({t} - {r}) // 2]")


# ---------------------------------------------------------------- combinatorics

@family("coins", "combinatorics", "List[int]")
def coins(rng: random.Random, d: int) -> tuple[str, str]:
    if d == 1:
        c, k = rng.randint(2, 9), rng.randint(1, 9)
        return f"sum(li) == {c * k} and all(v == {c} for v in li)", f"[{c}] * ({c * k} // {c})"
    a, b = rng.sample(range(2, 20), 2)
    i, j = rng.randint(1, 6), rng.randint(1, 6)
    t = a * i + b * j
    if d == 2:
        return f"sum(li) == {t} and all(v in [{a}, {b}] for v in li)", f"[{a}] * {i} + [{b}] * {j}"
    return (f"sum(li) == {t} and len(li) == {i + j} and all(v in [{a}, {b}] for v in li)",
            f"[{a}] * {i} + [{b}] * {j}")


@family("distinct", "combinatorics", "List[int]")
def distinct(rng: random.Random, d: int) -> tuple[str, str]:
    k = rng.randint(2, 6 if d == 1 else 12)
    a = rng.randint(0, 30) if d == 1 else rng.randint(-50, 50)
    if d == 1:
        return f"len(li) == {k} and len(set(li)) == {k} and min(li) == {a}", f"list(range({a}, {a} + {k}))"
    if d == 2:
        return (f"len(li) == {k} and len(set(li)) == {k} and all({a} <= v < {a + k} for v in li)",
                f"list(range({a}, {a} + {k}))")
    m = rng.randint(2, 9)
    return (f"len(li) == {k} and len(set(li)) == {k} and all(v % {m} == 0 and v >= {a} for v in li)",
            f"[{m} * i for i in range({a} // {m} + 1, {a} // {m} + 1 + {k})]")


@family("permutation", "combinatorics", "List[int]")
def permutation(rng: random.Random, d: int) -> tuple[str, str]:
    n = rng.randint(3, 6) if d == 1 else rng.randint(4, 12)
    a = rng.randint(0, 9) if d == 1 else rng.randint(-20, 20)
    base = f"sorted(li) == list(range({a}, {a + n}))"
    if d == 1:
        return f"{base} and li[0] == {a + n - 1}", f"list(range({a}, {a + n}))[::-1]"
    if d == 2:
        return (f"{base} and all(li[i] != {a} + i for i in range({n}))",
                f"list(range({a + 1}, {a + n})) + [{a}]")
    # Every other number, then the rest: neighbours differ by at least 2 for n >= 4.
    return (f"{base} and all(abs(u - v) > 1 for u, v in zip(li, li[1:]))",
            f"list(range({a + 1}, {a + n}, 2)) + list(range({a}, {a + n}, 2))")


@family("subset_sum", "combinatorics", "List[int]")
def subset_sum(rng: random.Random, d: int) -> tuple[str, str]:
    n = (4, 7, 10)[d - 1]
    nums = [rng.randint(1, 9 if d == 1 else 50) for _ in range(n)]
    if d == 1:   # two values from a set (repeats allowed)
        t = rng.choice(nums) + rng.choice(nums)
        values = "{" + ", ".join(map(str, sorted(set(nums)))) + "}"
        return (f"len(li) == 2 and sum(li) == {t} and set(li) <= {values}",
                f"next([a, b] for a in {values} for b in {values} if a + b == {t})")
    chosen = sorted(rng.sample(range(n), rng.randint(1, n - 1)))
    t, k = sum(nums[i] for i in chosen), len(chosen)
    bits = f"[i for i in range({n}) if m >> i & 1]"
    # Indices, not values: distinct and in range; the solution searches all 2^n subsets (at most 1024).
    condition = (f"all(0 <= i < {n} for i in li) and len(set(li)) == len(li) "
                 f"and sum({nums}[i] for i in li) == {t}")
    if d < 3:
        return condition, f"next({bits} for m in range(1 << {n}) if sum({nums}[i] for i in {bits}) == {t})"
    return (f"{condition} and len(li) == {k}",
            f"next({bits} for m in range(1 << {n}) if sum({nums}[i] for i in {bits}) == {t} "
            f"and bin(m).count('1') == {k})")
