"""String families."""

from __future__ import annotations

import random

from distill_ray.tasks.families.core import LETTERS, WORDS, chunk as _chunk, family


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


@family("anagram", "strings", "str")
def anagram(rng: random.Random, d: int) -> tuple[str, str]:
    # Distinct letters: the reverse differs from the word, and the sorted orders are strict.
    word = "".join(rng.sample(LETTERS, rng.randint(3, 5) if d == 1 else rng.randint(5, 9)))
    if d == 1:
        return f"sorted(s) == sorted('{word}') and s != '{word}'", f"'{word}'[::-1]"
    if d == 2:
        return (f"sorted(s) == sorted('{word}') and s[0] == '{max(word)}'",
                f"''.join(sorted('{word}', reverse=True))")
    return (f"sorted(s) == sorted('{word}') and all(a < b for a, b in zip(s, s[1:]))",
            f"''.join(sorted('{word}'))")
