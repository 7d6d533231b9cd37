"""The puzzle source's parts, written by a Ray task while the stream reads them (``tasks/puzzle_parts.py``)."""

from __future__ import annotations

import time

import pytest

from distill_ray.tasks import puzzle_parts
from distill_ray.tasks.puzzles import load_puzzles
from distill_ray.tasks.table import plan_parts, read_problems, write_problem_table


@pytest.mark.parametrize("count", [0, 1, 4, 9])
def test_the_planned_parts_are_the_written_ones(tmp_path, count):
    train, _ = load_puzzles(num_train=count, num_eval=0) if count else ([], [])
    assert plan_parts(tmp_path, count, 4) == write_problem_table(train, tmp_path, 4)


def test_reads_wait_for_their_part_and_get_the_puzzles_load_task_gives(ray_cluster, tmp_path):
    """An earlier run's part is removed before the writer starts, so no read can take it; each part, once there,
    holds the puzzles after the exemplar pool, in order."""
    (tmp_path / "part-000000.parquet").write_bytes(b"from another config")
    chunks, writer = puzzle_parts.start(tmp_path, 4, skip=3, count=9, seed=5, difficulty=1, families=None)
    for chunk in reversed(chunks):
        puzzle_parts.wait_for_part(chunk.file, writer)
    train, _ = load_puzzles(num_train=12, num_eval=0, seed=5)
    assert [p for c in chunks for p in read_problems(c)] == train[3:]
    assert [(c.start, c.stop) for c in chunks] == [(0, 4), (0, 4), (0, 1)]


def test_a_read_whose_writer_fails_gets_the_writers_error(ray_cluster, tmp_path):
    # root has 39 distinct puzzles at difficulty 1: the writer fails after writing what it could.
    chunks, writer = puzzle_parts.start(tmp_path, 16, skip=0, count=60, seed=0, difficulty=1, families=["root"])
    puzzle_parts.wait_for_part(chunks[0].file, writer)
    with pytest.raises(ValueError, match="distinct train puzzles"):
        puzzle_parts.wait_for_part(chunks[-1].file, writer)


def test_a_read_waits_for_a_slow_writer(ray_cluster, tmp_path):
    import ray

    part = tmp_path / "part-000000.parquet"

    @ray.remote(num_cpus=0)
    def slow_writer():
        time.sleep(1.0)
        (tmp_path / ".tmp").write_bytes(b"done")
        (tmp_path / ".tmp").replace(part)   # parts appear only complete

    writer = slow_writer.remote()
    puzzle_parts.wait_for_part(str(part), writer)
    assert part.read_bytes() == b"done"
