"""Seeded procedural puzzles: one puzzle from (family, seed, difficulty), and train/eval sets of them.

A puzzle is a pure function of (family, difficulty, seed), so its task_id ("puzzles/add_const/d1/s17") names
it completely and anyone can regenerate it. Train and eval draw seeds from disjoint ranges, and eval also drops
any puzzle whose sat text already occurs in train (easy difficulties have small spaces, so different seeds
can give the same puzzle).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
from dataclasses import dataclass
from typing import Iterator

from distill_ray.tasks.families import ANSWER_VARS, DIFFICULTIES, FAMILIES
from distill_ray.tasks.schema import make_problem

log = logging.getLogger(__name__)

SOURCE = "puzzles"
# Puzzle seeds of one load_problems seed: train uses [base, base + 2^31), eval [base + 2^31, base + 2^32).
SEED_STRIDE = 2 ** 32
EVAL_OFFSET = 2 ** 31
# A family that yields this many already-seen puzzles in a row is taken as exhausted at this difficulty.
MAX_REPEATS = 200


@dataclass(frozen=True)
class Puzzle:
    family: str
    difficulty: int
    seed: int
    ans_type: str
    sat: str    # "def sat(x: int) -> bool:\n    return x + 7 == 19"
    sol: str    # "def sol():\n    return 19 - 7"

    @property
    def task_id(self) -> str:
        return f"{SOURCE}/{self.family}/d{self.difficulty}/s{self.seed}"

    def to_problem(self, split: str) -> dict:
        return make_problem(task_id=self.task_id, split=split, source=SOURCE, family=self.family,
                            difficulty=self.difficulty, kind="p3", question=self.sat, sat=self.sat,
                            ans_type=self.ans_type, reference=self.sol)


def list_families() -> list[str]:
    return list(FAMILIES)


def check_families(families: list[str] | None) -> list[str]:
    """The requested family names (all, in registry order, when None); ValueError on unknown names."""
    if families is None:
        return list(FAMILIES)
    if isinstance(families, str):
        families = [families]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown puzzle families {unknown}; known: {sorted(FAMILIES)}")
    if not families:
        raise ValueError("families is empty; pass None for all families")
    return list(dict.fromkeys(families))


def generate_puzzle(family: str, seed: int, difficulty: int = 1) -> Puzzle:
    """The puzzle of ``family`` at ``difficulty`` for ``seed``; identical in every process and run."""
    if family not in FAMILIES:
        raise ValueError(f"unknown puzzle family {family!r}; known: {sorted(FAMILIES)}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    spec = FAMILIES[family]
    # A string seed is hashed with SHA-512 by random.seed, so it does not depend on PYTHONHASHSEED.
    rng = random.Random(f"{family}/{difficulty}/{seed}")
    condition, answer = spec.generate(rng, difficulty)
    var = ANSWER_VARS[spec.ans_type]
    return Puzzle(family=family, difficulty=difficulty, seed=seed, ans_type=spec.ans_type,
                  sat=f"def sat({var}: {spec.ans_type}) -> bool:\n    return {condition}",
                  sol=f"def sol():\n    return {answer}")


def iter_puzzles(families: list[str], difficulty: int, first_seed: int, seen: set[bytes]) -> Iterator[Puzzle]:
    """Puzzles with sat text not in ``seen`` (``sat_key``s, updated in place), families taken round-robin.

    Each family walks its own seeds first_seed, first_seed + 1, ...; a family that keeps repeating puzzles
    leaves the rotation, and the iterator ends when every family has left.
    """
    next_seed = {f: first_seed for f in families}
    active = list(families)
    while active:
        for name in list(active):
            puzzle = _next_new(name, difficulty, next_seed, seen)
            if puzzle is None:
                log.warning("puzzle family %s is exhausted at difficulty %d (%d seeds tried)",
                            name, difficulty, next_seed[name] - first_seed)
                active.remove(name)
                continue
            yield puzzle


def sat_key(sat: str) -> bytes:
    """What ``seen`` holds of a sat: a 12-byte digest, not the text (10^6 puzzles: ~60 MB, not ~200 MB)."""
    return hashlib.blake2b(sat.encode(), digest_size=12).digest()


def _next_new(name: str, difficulty: int, next_seed: dict[str, int], seen: set[bytes]) -> Puzzle | None:
    for _ in range(MAX_REPEATS):
        puzzle = generate_puzzle(name, next_seed[name], difficulty)
        next_seed[name] += 1
        key = sat_key(puzzle.sat)
        if key not in seen:
            seen.add(key)
            return puzzle
    return None


def load_puzzles(*, num_train: int, num_eval: int, seed: int = 0, difficulty: int = 1,
                 families: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    problems = puzzle_problems(num_train=num_train, num_eval=num_eval, seed=seed, difficulty=difficulty,
                               families=families)
    train = list(itertools.islice(problems, num_train))
    return train, list(problems)


def puzzle_problems(*, num_train: int, num_eval: int, seed: int = 0, difficulty: int = 1,
                    families: list[str] | None = None) -> Iterator[dict]:
    """``load_puzzles``' train problems, then its eval ones, one at a time: what a stream of millions of them
    holds is one digest per puzzle (``seen``), not the problems."""
    names = check_families(families)
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    base = seed * SEED_STRIDE
    seen: set[bytes] = set()  # shared, so eval never repeats a train sat (nor itself)
    yield from _take(iter_puzzles(names, difficulty, base, seen), num_train, "train", names, difficulty)
    yield from _take(iter_puzzles(names, difficulty, base + EVAL_OFFSET, seen), num_eval, "eval", names, difficulty)


def _take(puzzles: Iterator[Puzzle], count: int, split: str, names: list[str], difficulty: int) -> Iterator[dict]:
    # islice stops before drawing a puzzle too many, which would otherwise be marked seen for nothing.
    made = 0
    for puzzle in itertools.islice(puzzles, count):
        made += 1
        yield puzzle.to_problem(split)
    if made < count:
        raise ValueError(f"families {names} give only {made} distinct {split} puzzles at difficulty "
                         f"{difficulty}, {count} asked; add families or raise the difficulty")
