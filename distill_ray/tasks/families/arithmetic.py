"""Arithmetic and number-theory families."""

from __future__ import annotations

import math
import random

from distill_ray.tasks.families.core import family

PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47)


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


@family("gcd_lcm", "number_theory", "int")
def gcd_lcm(rng: random.Random, d: int) -> tuple[str, str]:
    if d == 1:   # greatest common divisor: any larger x misses one of the two divisibilities
        g = rng.randint(2, 12)
        a, b = g * rng.randint(1, 9), g * rng.randint(1, 9)
        return (f"x > 0 and {a} % x == 0 and {b} % x == 0 and x >= {math.gcd(a, b)}",
                f"max(v for v in range(1, {a} + 1) if {a} % v == 0 and {b} % v == 0)")
    if d == 2:   # least common multiple
        a, b = rng.sample(range(2, 40), 2)
        return (f"x > 0 and x % {a} == 0 and x % {b} == 0 and x <= {math.lcm(a, b)}",
                f"min(v for v in range({a}, {a} * {b} + 1, {a}) if v % {b} == 0)")
    a, b = rng.sample(PRIMES, 2)   # Chinese remainder theorem: coprime moduli have exactly one solution below a*b
    r, q = rng.randrange(a), rng.randrange(b)
    return (f"0 <= x < {a * b} and x % {a} == {r} and x % {b} == {q}",
            f"next(v for v in range({a} * {b}) if v % {a} == {r} and v % {b} == {q})")


@family("prime", "number_theory", "int")
def prime(rng: random.Random, d: int) -> tuple[str, str]:
    # Trial division up to sqrt(x); x > b >= 2, so the found prime is odd and x + 1 is not prime.
    test = "all({v} % p for p in range(2, int({v} ** 0.5) + 1))"
    if d == 1:
        b = rng.randint(2, 60)
        return (f"x > {b} and {test.format(v='x')}",
                f"next(v for v in range({b} + 1, 2 * {b} + 2) if {test.format(v='v')})")
    if d == 2:
        b, m = rng.randint(100, 5000), rng.choice((4, 6))
        return (f"x > {b} and x % {m} == 1 and {test.format(v='x')}",
                f"next(v for v in range({b} + 1, 100 * {b}) if v % {m} == 1 and {test.format(v='v')})")
    b = rng.randint(100, 5000)   # twin primes: x and x + 2
    return (f"x > {b} and {test.format(v='x')} and {test.format(v='(x + 2)')}",
            f"next(v for v in range({b} + 1, 100 * {b}) if {test.format(v='v')} and {test.format(v='(v + 2)')})")
