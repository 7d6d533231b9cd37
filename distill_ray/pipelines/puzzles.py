"""The puzzle job's pipeline: verified, deduplicated puzzles streamed into resumable Parquet shards.

    ray.data.range(num + teacher_prompts) -> [generate | puzzle_prompts -> puzzle_teacher] -> check -> sink

Ids below ``num`` are puzzle seeds, the rest teacher prompts; each branch keeps its own ids, and the branches'
rows are unioned (the teacher branch exists only when there are teacher prompts). Dedupe keys are computed
where rows are made (generate tasks, teacher actor), in parallel; the one sink actor only looks them up. CPU
reservations are logical: the actors hold 0.85 CPU in all (check 0.25, its sandbox processes not counted; sink
0.1; teacher 0.5), which leaves a whole CPU for the read + generate tasks, so 2 CPUs never deadlock.
"""

from __future__ import annotations

from distill_ray.stages import Stage, UnionStage, check, generate, puzzle_teacher, sink
from distill_ray.synth.config import Plan, PuzzleJobConfig
from distill_ray.synth.schedule import Schedule

SOURCE = {"id": None}   # ray.data.range's one column


def puzzle_stages(cfg: PuzzleJobConfig, plan: Plan, done: frozenset, schedule: Schedule | None = None) -> list[Stage]:
    """The stages over the id range; ``done``: chunks already written (their rows are not made again);
    ``schedule``: the seeds' puzzles (None: ``generate.schedule_of(cfg)``)."""
    branches = []
    if plan.num:
        branches.append((generate.build(cfg, plan, done, schedule or generate.schedule_of(cfg, plan.num)),))
    if plan.teacher_prompts:
        branches.append(puzzle_teacher.build(cfg, plan, done))
    make = branches[0] if len(branches) == 1 else (UnionStage("puzzles[generate | teacher]", reads=("id",),
                                                               writes=generate.WRITES, branches=tuple(branches)),)
    return [*make, check.build(cfg), sink.build(cfg, plan)]


def source(plan: Plan):
    """The id range, in about chunk-aligned blocks, never tiny ones."""
    import ray.data

    blocks = max(1, min(plan.num // 500, 4 * plan.procedural_chunks)) + (1 if plan.teacher_prompts else 0)
    return ray.data.range(plan.num + plan.teacher_prompts, override_num_blocks=blocks)
