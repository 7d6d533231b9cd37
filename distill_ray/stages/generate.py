"""generate: puzzle seeds to procedural puzzles (the puzzle job's first stage).

The job's source is ``ray.data.range(num + teacher_prompts)``: ids below ``num`` are puzzle seeds (this stage),
the rest teacher prompts (``puzzle_teacher``). Every row carries ``reject`` ("" while alive, else why it was
dropped), so every row reaches the sink and every row's fate is counted; nothing is filtered out on the way.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from distill_ray.stages.base import BatchStage
from distill_ray.synth.config import Plan, PuzzleJobConfig
from distill_ray.synth.dedupe import add_keys
from distill_ray.synth.schedule import PROBE_DRAWS, Schedule, probe
from distill_ray.tasks.puzzles import SEED_STRIDE, generate_puzzle

READS = ("id",)
# The puzzle job's row, from here (and from the teacher) to the sink.
PUZZLE_COLUMNS = {
    "id": pa.string(),          # "<family>/d<difficulty>/s<seed>" or "teacher/p<prompt>/k<sample>"
    "chunk": pa.int64(),        # the shard it lands in
    "source": pa.string(),      # the family's name, or "teacher"
    "family": pa.string(),
    "difficulty": pa.int64(),   # 0 for teacher-written puzzles
    "ans_type": pa.string(),
    "sat": pa.string(),
    "sol": pa.string(),
    "trusted": pa.bool_(),      # our families' sat (judged in a persistent process) vs a teacher's
    "reject": pa.string(),      # "" while alive, else why it was dropped
    "detail": pa.string(),      # the reason's detail
}
KEY_COLUMNS = {"exact_key": pa.int64(),               # AST canonical form hash of sat (0: no key)
               "band_keys": pa.list_(pa.int64())}     # MinHash LSH bands (near-duplicate scope only)
WRITES = {**PUZZLE_COLUMNS, **KEY_COLUMNS}


def procedural_rows(batch: pd.DataFrame, families: list[str], difficulties: list[int], seed: int, chunk_size: int,
                    done: frozenset, scope: str | None = None, threshold: float = 0.85,
                    num: int | None = None, budgets: tuple[int | None, ...] | None = None) -> pd.DataFrame:
    """Seeds (``id`` below ``num``; None: every id) to puzzles; seeds of chunks already written are skipped.

    Seed s draws from the (family, difficulty) cells in turn (``synth/schedule.py``; ``budgets``: the cells'
    draws, None: a plain round robin, family ``families[s % F]``, difficulty ``difficulties[(s // F) % D]``),
    so every prefix of the seeds mixes all families and difficulties. With ``scope`` set, the dedupe keys are
    added here too (in these parallel tasks rather than in the one sink, which would otherwise be the bottleneck).
    """
    plain = Schedule.round_robin(families, difficulties)
    schedule = plain if budgets is None else Schedule(plain.cells, tuple(budgets))
    rows = []
    for s in batch["id"].tolist():
        chunk = s // chunk_size
        if (num is not None and s >= num) or chunk in done:
            continue
        family, difficulty, draw = schedule.draw(s)
        p = generate_puzzle(family, seed * SEED_STRIDE + draw, difficulty)
        rows.append((f"{family}/d{difficulty}/s{p.seed}", chunk, family, family, difficulty, p.ans_type, p.sat,
                     p.sol, True, "", ""))
    frame = pd.DataFrame(rows, columns=list(PUZZLE_COLUMNS))
    return add_keys(frame, scope, threshold) if scope else frame


def schedule_of(cfg: PuzzleJobConfig, num: int) -> Schedule:
    """The job's seed schedule: the round robin, with budgets for the small cells when ``skip_exhausted``; a
    ValueError when the cells cannot give ``num`` draws."""
    families = _families(cfg)
    if not cfg.skip_exhausted:
        return Schedule.round_robin(families, cfg.difficulties)
    cells = len(families) * len(cfg.difficulties)
    # A cell needs a budget only if it is below the cell's share of the seeds: probe no further than that.
    schedule = probe(families, cfg.difficulties, cfg.seed, draws=min(PROBE_DRAWS, max(8, -(-num // cells))))
    if schedule.capacity is not None and schedule.capacity < num:
        raise ValueError(f"families {families} at difficulties {cfg.difficulties} give about {schedule.capacity} "
                         f"draws before they only repeat; {num} seeds asked: add families or difficulties, "
                         "or set skip_exhausted=false to draw repeats")
    return schedule


def _families(cfg: PuzzleJobConfig) -> list[str]:
    from distill_ray.tasks.families import FAMILIES

    return cfg.families or list(FAMILIES)


def build(cfg: PuzzleJobConfig, plan: Plan, done: frozenset, schedule: Schedule) -> BatchStage:
    # 0.5 CPU: with the actors' 0.85 (verifier 0.25, sink 0.1, teacher 0.5) two such tasks fit 2 CPUs.
    return BatchStage("generate", reads=READS, writes=WRITES, fn=procedural_rows, batch_size=None, cpus=0.5,
                      fn_kwargs=dict(families=_families(cfg), difficulties=cfg.difficulties, seed=cfg.seed,
                                     num=plan.num, chunk_size=plan.chunk_size, done=done,
                                     scope=cfg.near_dup_scope, threshold=cfg.near_dup_threshold,
                                     budgets=schedule.budgets))
