"""The family registry (``family``, ``FAMILIES``) and helpers shared by the topic modules.

Procedural puzzle families: each turns (rng, difficulty) into a P3 condition and its solution expression.

A family is one small function registered with ``@family(name, topic, ans_type)``. It returns
``(condition, answer)``: ``condition`` is the boolean expression that ``sat`` returns, written over the answer
variable (``x`` for int, ``s`` for str, ``li`` for List[int], ``ls`` for List[str]); ``answer`` is a Python
expression, built only from the constants that appear in the condition, whose value satisfies it.

Why expressions and not literal results: the 135M teacher solves easy puzzles only when its few-shot exemplars
show answers computed from the puzzle's constants (``return 19 - 7``, ``return 'ab' * 3``); with literal answers
it verified 0 of 96. References double as those exemplars, so they must be expressions.

Difficulty: 1 is trivial (one operation, small constants), 2 adds a second constraint or bigger numbers, 3 needs a
small construction. Generating a puzzle is a handful of ``rng`` calls and one f-string (a few microseconds), so
families can scale to millions of puzzles. To add a family, write one function in its topic's module;
nothing else changes.
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
    topic: str          # arithmetic | number_theory | strings | lists | combinatorics | geometry | games
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


def chunk(rng: random.Random, low: int, high: int) -> str:
    """A random lowercase string of length in [low, high]."""
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(low, high)))
