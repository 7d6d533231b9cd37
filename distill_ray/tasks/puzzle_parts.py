"""The puzzle source's train problems, written as Parquet parts by a Ray task while the stream already reads them.

Drawing a million distinct puzzles and writing them takes one core ~50 s: done by the driver before the stream,
the whole cluster waited for it. ``puzzle_problems`` yields exactly the count asked (or fails), so the parts'
names and sizes are known before a puzzle is drawn: the driver plans the chunks (``table.plan_parts``), starts
``write_parts`` on its own node (the parts are its files, like the shards) and starts the stream at once. Each
chunk's read waits for its part (``wait_for_part``: parts appear only complete) and, if the writer ended without
writing it, fails with the writer's error. The digests that keep a million puzzles distinct live in the writer's
process, not the driver's.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from distill_ray.tasks.table import TableChunk, plan_parts, write_problem_table

POLL_S = 0.05   # a read waiting for its part looks this often (only the first chunks ever wait: the writer is ahead)


def clear_parts(directory: str | Path) -> None:
    """Remove an earlier run's parts (a read must never take one for the part this run's writer is about to write:
    another config may have written it)."""
    for path in Path(directory).glob("*part-*.parquet*"):
        path.unlink(missing_ok=True)


def write_parts(directory: str, chunk_size: int, skip: int, planned: list[TableChunk], **puzzles) -> int:
    """Draw ``puzzle_problems(**puzzles)``, leave out the first ``skip`` (the exemplar pool) and write the rest as
    parts; fails if they are not the ``planned`` ones. Runs as a Ray task: see ``start``."""
    from distill_ray.tasks.puzzles import puzzle_problems

    problems = itertools.islice(puzzle_problems(**puzzles), skip, None)
    written = write_problem_table(problems, directory, chunk_size)
    if written != planned:
        raise RuntimeError(f"the puzzle parts written ({len(written)}) are not the ones planned ({len(planned)})")
    return len(written)


def start(directory: str | Path, chunk_size: int, skip: int, count: int, **puzzles):
    """(the planned chunks, the writer task's ObjectRef): ``count`` puzzles after the first ``skip``, written by a
    task on the driver's node while the caller goes on."""
    import ray

    from distill_ray.stages.base import on_driver_node

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    clear_parts(directory)
    planned = plan_parts(directory, count, chunk_size)
    task = ray.remote(num_cpus=0)(write_parts).options(**on_driver_node())
    writer = task.remote(str(directory), chunk_size, skip, planned, num_train=skip + count, num_eval=0, **puzzles)
    return planned, writer


def wait_for_part(file: str, writer) -> None:
    """Return once ``file`` exists; raise the writer's error (or FileNotFoundError) if it ended without it."""
    import ray

    while not os.path.exists(file):
        ended, _ = ray.wait([writer], timeout=POLL_S)
        if ended and not os.path.exists(file):
            ray.get(writer)   # raises the writer's own error
            raise FileNotFoundError(f"the puzzle writer ended without writing {file}")
