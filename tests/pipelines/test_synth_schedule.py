"""The puzzle job's seed schedule: a round robin over (family, difficulty) cells that skips used-up cells."""

import math

import pandas as pd
import pytest

from distill_ray.stages.generate import procedural_rows, schedule_of
from distill_ray.synth.config import PuzzleJobConfig
from distill_ray.synth.schedule import Schedule, cell_budget, estimated_space, probe


def test_without_budgets_the_schedule_is_the_plain_round_robin():
    families, difficulties = ["a", "b", "c"], [1, 2]
    schedule = Schedule.round_robin(families, difficulties)
    for s in range(50):
        family, difficulty, draw = schedule.draw(s)
        assert (family, difficulty, draw) == (families[s % 3], difficulties[(s // 3) % 2], s)


def test_a_spent_cell_gives_its_turns_to_the_others_and_every_draw_is_made_once():
    schedule = Schedule((("a", 1), ("b", 1), ("c", 1)), (2, None, 5))
    draws = [schedule.draw(s) for s in range(30)]
    per_cell = {f: [d for fam, _, d in draws if fam == f] for f in "abc"}
    assert len(per_cell["a"]) == 2 and len(per_cell["c"]) == 5 and len(per_cell["b"]) == 23
    # a cell's r-th draw uses generator seed r * C + cell, as in the plain round robin
    assert per_cell["a"] == [0, 3] and per_cell["c"] == [2, 5, 8, 11, 14] and per_cell["b"][:3] == [1, 4, 7]
    assert len({d for _, _, d in draws}) == 30
    assert draws[:6] == [("a", 1, 0), ("b", 1, 1), ("c", 1, 2), ("a", 1, 3), ("b", 1, 4), ("c", 1, 5)]


def test_a_schedule_of_finite_cells_stops_at_its_capacity():
    schedule = Schedule((("a", 1), ("b", 1)), (2, 3))
    assert schedule.capacity == 5
    assert sorted(schedule.draw(s)[2] for s in range(5)) == [0, 1, 2, 3, 5]
    with pytest.raises(ValueError, match="capacity of 5"):
        schedule.draw(5)


def test_the_space_estimate_inverts_the_expected_distinct_count():
    for size in (50, 700, 3000):
        distinct = size * (1 - math.exp(-2048 / size))
        assert estimated_space(2048, distinct) == pytest.approx(size, rel=1e-3)
    assert estimated_space(2048, 2040) is None


def test_cell_budgets():
    assert cell_budget(100, 10, last_new=30) == 31          # saw it all early: exactly its draws up to the last new
    assert cell_budget(100, 99, last_new=99) is None          # hardly repeats: no limit
    assert cell_budget(2048, 1500, last_new=2040) >= 2 * estimated_space(2048, 1500) - 1


def test_the_probe_caps_small_cells_and_the_job_keeps_every_puzzle_they_hold():
    # tictactoe at difficulty 1 has 3 puzzles, sort_list at difficulty 1 hardly repeats
    schedule = probe(["tictactoe", "sort_list"], [1], seed=0, draws=256)
    assert schedule.budgets[0] is not None and schedule.budgets[0] < 64 and schedule.budgets[1] is None
    rows = procedural_rows(pd.DataFrame({"id": range(400)}), ["tictactoe", "sort_list"], [1], 0, 1000,
                           frozenset(), budgets=schedule.budgets)
    plain = procedural_rows(pd.DataFrame({"id": range(400)}), ["tictactoe", "sort_list"], [1], 0, 1000, frozenset())
    tic = rows[rows.family == "tictactoe"]
    assert len(tic) == schedule.budgets[0] and tic.sat.nunique() == 3
    assert rows.sat.nunique() > plain.sat.nunique() + 150
    # ids name the puzzle: the same id is the same puzzle in both schedules
    both = rows.merge(plain, on="id")
    assert len(both) > 0 and (both.sat_x == both.sat_y).all()


def test_a_job_asking_more_than_its_cells_hold_is_refused():
    cfg = PuzzleJobConfig(num=5000, output="/tmp/unused", families=["tictactoe", "nim"], difficulties=[1])
    with pytest.raises(ValueError, match="only repeat"):
        schedule_of(cfg, cfg.num)
    cfg = cfg.model_copy(update={"skip_exhausted": False})
    assert schedule_of(cfg, cfg.num).capacity is None
