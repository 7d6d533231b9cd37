"""Procedural puzzle families: each turns (rng, difficulty) into a P3 condition and its solution expression.

A family is one small function registered with ``@family(name, topic, ans_type)``. It returns
``(condition, answer)``: ``condition`` is the boolean expression that ``sat`` returns, written over the answer
variable (``x`` for int, ``s`` for str, ``li`` for List[int], ``ls`` for List[str]); ``answer`` is a Python
expression, built only from the constants that appear in the condition, whose value satisfies it.

Why expressions and not literal results: the 135M teacher solves easy puzzles only when its few-shot exemplars
show answers computed from the puzzle's constants (``return 19 - 7``, ``return 'ab' * 3``); with literal answers
it verified 0 of 96. References double as those exemplars, so they must be expressions.

Difficulty: 1 is trivial (one operation, small constants), 2 adds a second constraint or bigger numbers, 3 needs a
small construction. Generating a puzzle is a handful of ``rng`` calls and one f-string (a few microseconds), so
families can scale to millions of puzzles. To add a family, write one function below; nothing else changes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

DIFFICULTIES = (1, 2, 3)

# Variable name of the answer in sat, by answer type (P3 style).
ANSWER_VARS = {"int": "x", "str": "s", "List[int]": "li", "List[str]": "ls"}

Generator = Callable[[random.Random, int], tuple[str, str]]


@dataclass(frozen=True)
class Family:
    name: str
    topic: str          # arithmetic | number_theory | strings | lists | combinatorics
    ans_type: str       # P3 answer type, a key of ANSWER_VARS
    generate: Generator  # (rng, difficulty) -> (condition, answer expression)


FAMILIES: dict[str, Family] = {}


def family(name: str, topic: str, ans_type: str) -> Callable[[Generator], Generator]:
    """Register a generator under ``name`` (registration order is the default round-robin order)."""
    if ans_type not in ANSWER_VARS:
        raise ValueError(f"family {name}: unsupported ans_type {ans_type!r}")

    def register(fn: Generator) -> Generator:
        if name in FAMILIES:
            raise ValueError(f"family {name!r} registered twice")
        FAMILIES[name] = Family(name, topic, ans_type, fn)
        return fn

    return register


# Short lowercase words and letters for string puzzles; short so sat sources stay short.
WORDS = ("cat", "dog", "sun", "red", "blue", "tree", "book", "fish", "star", "moon", "cake", "bird", "rain",
         "lamp", "milk", "gold", "frog", "leaf", "ship", "snow", "wind", "apple", "green", "house", "river")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _chunk(rng: random.Random, low: int, high: int) -> str:
    """A random lowercase string of length in [low, high]."""
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(low, high)))


# ---------------------------------------------------------------- arithmetic

@family("add_const", "arithmetic", "int")
def add_const(rng: random.Random, d: int) -> tuple[str, str]:
    if d == 1:
        a, x = rng.randint(1, 20), rng.randint(0, 30)
        return f"x + {a} == {x + a}", f"{x + a} - {a}"
    if d == 2:
        a, c, x = rng.randint(10, 99), rng.randint(10, 99), rng.randint(10, 99)
        return f"{a} + x + {c} == {a + x + c}", f"{a + x + c} - {a} - {c}"
    a, c, x = rng.randint(100, 999), rng.randint(100, 999), rng.randint(-999, 999)
    return f"x + {a} - {c} == {x + a - c}", f"{x + a - c} - {a} + {c}"


@family("sub_const", "arithmetic", "int")
def sub_const(rng: random.Random, d: int) -> tuple[str, str]:
    if d == 1:
        a, b = rng.randint(1, 20), rng.randint(0, 30)
        return f"x - {a} == {b}", f"{b} + {a}"
    if d == 2:
        b, x = rng.randint(10, 99), rng.randint(10, 99)
        return f"{b + x} - x == {b}", f"{b + x} - {b}"
    a, c, b = rng.randint(100, 999), rng.randint(100, 999), rng.randint(-999, 999)
    return f"x - {a} - {c} == {b}", f"{b} + {a} + {c}"


@family("mul_const", "arithmetic", "int")
def mul_const(rng: random.Random, d: int) -> tuple[str, str]:
    if d == 1:
        a, x = rng.randint(2, 9), rng.randint(1, 12)
        return f"x * {a} == {a * x}", f"{a * x} // {a}"
    if d == 2:
        a, x, c = rng.randint(2, 12), rng.randint(2, 50), rng.randint(1, 50)
        return f"{a} * x + {c} == {a * x + c}", f"({a * x + c} - {c}) // {a}"
    a, x, c = rng.randint(11, 99), rng.randint(-999, 999), rng.randint(100, 999)
    return f"{a} * x - {c} == {a * x - c}", f"({a * x - c} + {c}) // {a}"


@family("divmod", "arithmetic", "int")
def divmod_(rng: random.Random, d: int) -> tuple[str, str]:
    a, q = rng.randint(2, 9 if d == 1 else 30), rng.randint(1, 20 if d == 1 else 200)
    if d == 1:
        return f"x // {a} == {q} and x % {a} == 0", f"{q} * {a}"
    r = rng.randint(1, a - 1)
    if d == 2:
        return f"x // {a} == {q} and x % {a} == {r}", f"{q} * {a} + {r}"
    c = rng.randint(10, 99)
    return f"(x + {c}) // {a} == {q} and (x + {c}) % {a} == {r}", f"{q} * {a} + {r} - {c}"


# ---------------------------------------------------------------- number theory

@family("divisible", "number_theory", "int")
def divisible(rng: random.Random, d: int) -> tuple[str, str]:
    a, b = rng.randint(2, 9), rng.randint(1, 30 if d == 1 else 1000)
    if d == 1:
        return f"x % {a} == 0 and x > {b}", f"({b} // {a} + 1) * {a}"
    if d == 2:
        r = rng.randint(1, a - 1)
        return f"x % {a} == {r} and x > {b}", f"({b} // {a} + 1) * {a} + {r}"
    c = rng.randint(2, 9)
    return f"x % {a} == 0 and x % {c} == 0 and x > {b}", f"({b} // ({a} * {c}) + 1) * {a} * {c}"


@family("digits", "number_theory", "int")
def digits(rng: random.Random, d: int) -> tuple[str, str]:
    if d == 1:
        digit, n = rng.choice("123456789"), rng.randint(2, 6)
        return f"str(x) == '{digit}' * {n}", f"int('{digit}' * {n})"
    if d == 2:
        n, last = rng.randint(2, 8), rng.randint(0, 9)
        return f"len(str(x)) == {n} and x % 10 == {last}", f"10 ** ({n} - 1) + {last}"
    n = rng.randint(10, 80)
    return (f"x > 0 and sum(int(c) for c in str(x)) == {n}",
            f"int('9' * ({n} // 9) + str({n} % 9))")


@family("base_convert", "number_theory", "int")
def base_convert(rng: random.Random, d: int) -> tuple[str, str]:
    if d == 1:
        x = rng.randint(10, 999)
        return f"str(x) == '{x}'", f"int('{x}')"
    if d == 2:
        text = bin(rng.randint(4, 255))[2:]
        return f"bin(x) == '0b{text}'", f"int('{text}', 2)"
    text = hex(rng.randint(256, 65535))[2:]
    return f"hex(x) == '0x{text}'", f"int('{text}', 16)"


@family("root", "number_theory", "int")
def root(rng: random.Random, d: int) -> tuple[str, str]:
    # Float roots of these perfect powers are exact enough for round()/int() to recover the integer.
    if d == 1:
        x = rng.randint(2, 40)
        return f"x * x == {x * x} and x > 0", f"int({x * x} ** 0.5)"
    if d == 2:
        x = rng.randint(2, 100)
        return f"x ** 3 == {x ** 3}", f"round({x ** 3} ** (1 / 3))"
    x = rng.randint(10, 999)
    return f"x ** 2 == {x * x} and x < 0", f"-round({x * x} ** 0.5)"


# ---------------------------------------------------------------- strings

@family("repeat_str", "strings", "str")
def repeat_str(rng: random.Random, d: int) -> tuple[str, str]:
    unit, k = _chunk(rng, 1, 3), rng.randint(2, 6)
    if d == 1:
        return f"s == '{unit}' * {k}", f"'{unit}' * {k}"
    if d == 2:
        tail, m = _chunk(rng, 1, 2), rng.randint(2, 5)
        return f"s == '{unit}' * {k} + '{tail}' * {m}", f"'{unit}' * {k} + '{tail}' * {m}"
    # '_' is not a letter, so padding with it never creates an extra occurrence of the pair.
    pair, n = _chunk(rng, 2, 2), k * 2 + rng.randint(1, 6)
    return f"s.count('{pair}') == {k} and len(s) == {n}", f"'{pair}' * {k} + '_' * ({n} - 2 * {k})"


@family("affix", "strings", "str")
def affix(rng: random.Random, d: int) -> tuple[str, str]:
    middle, suffix = rng.choice(WORDS), _chunk(rng, 2, 3)
    if d == 1:
        whole = middle + suffix
        return f"s + '{suffix}' == '{whole}'", f"'{whole}'.removesuffix('{suffix}')"
    prefix = _chunk(rng, 2, 3)
    whole = prefix + middle + suffix
    if d == 2:
        return (f"'{prefix}' + s + '{suffix}' == '{whole}'",
                f"'{whole}'.removeprefix('{prefix}').removesuffix('{suffix}')")
    whole = middle[::-1] + suffix
    return f"s[::-1] + '{suffix}' == '{whole}'", f"'{whole}'.removesuffix('{suffix}')[::-1]"


@family("reverse_str", "strings", "str")
def reverse_str(rng: random.Random, d: int) -> tuple[str, str]:
    word = rng.choice(WORDS) if rng.random() < 0.5 else _chunk(rng, 3, 5)
    word += _chunk(rng, 1, 3) if d > 1 else ""
    if d == 1:
        return f"s[::-1] == '{word[::-1]}'", f"'{word[::-1]}'[::-1]"
    if d == 2:
        target = word[::-1].upper()
        return f"s[::-1].upper() == '{target}'", f"'{target}'[::-1].lower()"
    n = 2 * len(word)
    return (f"s == s[::-1] and s.startswith('{word}') and len(s) == {n}",
            f"'{word}' + '{word}'[::-1]")


@family("char_count", "strings", "str")
def char_count(rng: random.Random, d: int) -> tuple[str, str]:
    a, b = rng.sample(LETTERS, 2)
    k, m = rng.randint(1, 9), rng.randint(1, 9)
    if d == 1:
        return f"s.count('{a}') == {k} and len(s) == {k}", f"'{a}' * {k}"
    if d == 2:
        return (f"s.count('{a}') == {k} and s.count('{b}') == {m} and len(s) == {k + m}",
                f"'{a}' * {k} + '{b}' * {m}")
    return (f"s.count('{a}') == {k} and s.count('{b}') == {m} and len(s) == {k + m} and s.startswith('{b}')",
            f"'{b}' * {m} + '{a}' * {k}")


@family("join_words", "strings", "List[str]")
def join_words(rng: random.Random, d: int) -> tuple[str, str]:
    words = rng.sample(WORDS, rng.randint(2, 3 if d == 1 else 5))
    if d == 1:
        text = " ".join(words)
        return f"' '.join(ls) == '{text}'", f"'{text}'.split()"
    if d == 2:
        sep = rng.choice("-,;/")
        text = sep.join(words)
        return f"'{sep}'.join(ls) == '{text}' and len(ls) == {len(words)}", f"'{text}'.split('{sep}')"
    text = ",".join(words).upper()
    return (f"','.join(w.upper() for w in ls) == '{text}' and all(w.islower() for w in ls)",
            f"'{text}'.lower().split(',')")


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
