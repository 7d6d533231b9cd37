"""Which puzzle each seed of the puzzle job draws: round robin over (family, difficulty) cells, skipping the
cells whose space is used up.

Many cells hold few puzzles (``root`` at difficulty 1 has 39, ``tictactoe`` 3), so a strict round robin
spends most of a large job on repeats: 10^6 seeds give ~480k distinct puzzles. Before the job we probe each
cell with its own first draws (the very draws the job makes, so the probe is exact for them) and give a cell
that stopped finding new puzzles a budget of draws; once a cell's budget is spent, its turn in the rotation
goes to the cells that still have room. Without budgets the schedule is the plain round robin: seed ``s`` is
cell ``s % C`` in round ``s // C``. Either way a cell's round-``r`` draw uses generator seed ``r * C + cell``,
so a puzzle's id names it completely, whatever the schedule.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field

PROBE_DRAWS = 2048      # a cell's first draws looked at before the job
SATURATED_TAIL = 0.25   # a probe that found nothing new in its last quarter has seen the whole cell
COVERAGE_DRAWS = 2.0    # draws per estimated puzzle for a larger cell (about 86% of it for a uniform space)


@dataclass(frozen=True)
class Schedule:
    """Seed index -> (cell, round). ``cells``: (family, difficulty) in round-robin order; ``budgets``: draws
    per cell, None for no limit."""

    cells: tuple[tuple[str, int], ...]
    budgets: tuple[int | None, ...]
    _segments: list = field(init=False, repr=False, compare=False)
    _starts: list = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        # Segments of rounds in which the same cells are active: (first seed, first round, active cells).
        segments, seed, first_round = [], 0, 0
        for end in sorted({b for b in self.budgets if b is not None}) + [None]:
            active = [c for c, b in enumerate(self.budgets) if b is None or b > first_round]
            if not active:
                break
            segments.append((seed, first_round, active))
            if end is None:
                break
            seed += (end - first_round) * len(active)
            first_round = end
        object.__setattr__(self, "_segments", segments)
        object.__setattr__(self, "_starts", [first for first, _, _ in segments])

    @classmethod
    def round_robin(cls, families: list[str], difficulties: list[int]) -> "Schedule":
        cells = tuple((f, d) for d in difficulties for f in families)
        return cls(cells, (None,) * len(cells))

    @property
    def capacity(self) -> int | None:
        """Seeds the schedule can draw (None: unbounded)."""
        return None if None in self.budgets else sum(self.budgets)

    def draw(self, s: int) -> tuple[str, int, int]:
        """(family, difficulty, generator seed index) of the job's seed ``s``."""
        first_seed, first_round, active = self._segments[bisect_right(self._starts, s) - 1]
        offset = s - first_seed
        cell = active[offset % len(active)]
        round_ = first_round + offset // len(active)
        if self.budgets[cell] is not None and round_ >= self.budgets[cell]:
            raise ValueError(f"seed {s} is past the schedule's capacity of {self.capacity} seeds")
        family, difficulty = self.cells[cell]
        return family, difficulty, round_ * len(self.cells) + cell

    def capped(self) -> dict[str, int]:
        """The cells with a budget, as {"family/dN": draws}."""
        return {f"{f}/d{d}": b for (f, d), b in zip(self.cells, self.budgets) if b is not None}


def probe(families: list[str], difficulties: list[int], seed: int, draws: int = PROBE_DRAWS) -> Schedule:
    """The schedule with budgets for the cells whose first ``draws`` draws show a small space."""
    from distill_ray.tasks.puzzles import SEED_STRIDE, generate_puzzle, sat_key

    plain = Schedule.round_robin(families, difficulties)
    budgets = []
    for c, (family, difficulty) in enumerate(plain.cells):
        seen, last_new = set(), 0
        for r in range(draws):
            # the round robin's draw r of cell c: the same puzzle the job's draw makes
            key = sat_key(generate_puzzle(family, seed * SEED_STRIDE + r * len(plain.cells) + c, difficulty).sat)
            if key not in seen:
                seen.add(key)
                last_new = r
        budgets.append(cell_budget(draws, len(seen), last_new))
    return Schedule(plain.cells, tuple(budgets))


def cell_budget(draws: int, distinct: int, last_new: int) -> int | None:
    """Draws to give a cell whose first ``draws`` draws found ``distinct`` puzzles, the last new one at draw
    ``last_new``: all of them up to it when nothing new came in the probe's tail (the job repeats the probe's
    draws, so it finds the same puzzles); about twice the estimated space when the space is larger than the
    probe but small enough to show repeats; no limit otherwise."""
    if last_new < draws * (1 - SATURATED_TAIL):
        return last_new + 1
    size = estimated_space(draws, distinct)
    return None if size is None else max(draws, math.ceil(COVERAGE_DRAWS * size))


def estimated_space(draws: int, distinct: int) -> float | None:
    """S with S (1 - exp(-draws / S)) = distinct (uniform draws); None when the draws hardly repeat (>= 95%
    distinct: too large to tell from them)."""
    if distinct >= 0.95 * draws:
        return None
    low, high = float(distinct), float(distinct) * 1e4
    for _ in range(100):   # the left side grows with S: bisect
        mid = (low + high) / 2
        if mid * (1 - math.exp(-draws / mid)) < distinct:
            low = mid
        else:
            high = mid
    return high
