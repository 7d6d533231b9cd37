"""Resumable streaming: a stage list run over the problems in ONE Ray Data execution, into one atomic Parquet
shard per chunk of problems.

    chunks not yet written -> [the stages up to the group stage] -> ShardSink (one actor) -> part-NNNNNN.parquet

The problems are cut into chunks by position (``chunk_size``); each chunk enters the stream as its own block,
tagged with its number. The actor pools (teachers, verifiers) start once and live for the whole job. Rows are
never gathered in the driver: the sink actor collects each chunk's rows, and when all of them have arrived
(problems x the stages' fanout: a teacher's samples) it runs the group stage (the vote) over each problem's rows
and writes the chunk's shard (``shards.ShardSet``: a shard appears only complete). The driver sees one small
progress row per batch.

A job killed at any moment and rerun with the same output path skips the chunks whose shard exists: they are
neither sampled nor read again, and no row is written twice. The parameters that decide the rows are recorded
in ``<output>.manifest.json``; resuming with different ones is refused (it would mix two datasets), while
resources (actors, CPUs, batch sizes) may change between runs.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa

from distill_ray.cluster import alive_nodes, job_retries
from distill_ray.shards import Manifest, ShardSet, chunk_ranges
from distill_ray.stages import ActorStage, Columns, GroupStage, Stage, apply_stages, check_flow, rows_per_row, to_arrow
from distill_ray.stages.base import LIGHT_TASK, LIGHT_TASK_CONCURRENCY, metered, on_driver_node
from distill_ray.stopping import Stopped, record_stop

# Settings that change how fast rows are made, never which rows: a resumed run may use others.
RESOURCE_KEYS = frozenset({"actors", "cpus_per_actor", "gpus_per_actor", "actor_memory_gib", "batch_size",
                           "torch_threads", "workers_per_actor", "partitions", "engine_options", "resources"})
CHUNK = "_chunk"   # the chunk a row belongs to, from the source to the sink (never written)
CHUNK_PROBLEMS = "_chunk_problems"   # how many problems its chunk holds: the sink's count of a complete chunk
SINK_MEMORY_GIB = 0.5   # the rows of the chunks in flight (a few chunks of chunk_size x samples rows)


def row_params(config: dict) -> dict:
    """``config`` without its resource settings (recursively): what a resumed run must repeat exactly."""
    if isinstance(config, dict):
        return {k: row_params(v) for k, v in config.items() if k not in RESOURCE_KEYS}
    if isinstance(config, list):
        return [row_params(v) for v in config]
    return config


def run_in_shards(source: "ProblemChunks | TableChunks", columns: Columns, stages: list[Stage], out_dir: Path,
                  params: dict, resume: bool = True, log: Callable[[str], None] = print) -> float:
    """Run ``stages`` over the problems of ``source`` (whose columns and types are ``columns``) into
    ``out_dir/part-NNNNNN.parquet``, one shard per chunk, typed as the stages declare; returns the seconds spent.
    A group stage (the vote) may only come last: the sink runs it over each problem's complete rows.

    With ``resume=False`` an existing output is deleted first; otherwise it is continued (same ``params``
    required, else ValueError naming both)."""
    manifest = Manifest.for_output(out_dir)
    if not resume:
        shutil.rmtree(out_dir, ignore_errors=True)
        manifest.path.unlink(missing_ok=True)
    manifest.start({**params, **source.params()})
    shards = ShardSet(out_dir)
    shards.remove_temp_files()
    done = shards.done()
    if done:
        log(f"resuming {out_dir}: {len(done)} of {len(source)} shards already written, skipping them")
    todo = [index for index in range(len(source)) if index not in done]
    streamed, group = split_group_stage(stages)
    types = check_flow(columns, stages)
    start, alive = time.perf_counter(), None
    if todo:
        alive = alive_nodes()
        sink = ActorStage("sink", reads=(), writes={}, cls=ShardSink, actors=1, batch_size=None,
                          # No CPU reserved: it must never take the CPU the prompt/extract tasks wait for (a
                          # config that leaves them exactly one of 2 CPUs would deadlock on any fraction).
                          cpus_per_actor=0, memory_gib=SINK_MEMORY_GIB, driver_node=True, init_kwargs=dict(
                              out_dir=str(out_dir), types=types, group=group, fanout=rows_per_row(streamed)))
        tagged = {**columns, CHUNK: pa.int64(), CHUNK_PROBLEMS: pa.int64()}
        ds = sink.apply(apply_stages(source.dataset(todo, tagged, out_dir, types), tagged, streamed))
        try:
            follow_progress(ds, len(todo), len(source), log, Path(out_dir))
        except Stopped as stop:   # the stream is shut down: its abandoned shards leave only temporary files
            shards.remove_temp_files()
            record_stop(manifest, stop, len(shards.done()), len(source))
            log(f"{out_dir}: {stop}; {len(shards.done())} of {len(source)} shards written, the rest abandoned: "
                "rerun with the same output to resume")
            raise
    missing = sorted(set(todo) - shards.done())
    if missing:
        raise RuntimeError(f"{out_dir}: chunks {missing[:10]} got fewer rows than expected and were not written; "
                           "rerun with the same output to redo them")
    manifest.update(status="complete", retried=job_retries(alive) if alive else {})
    return time.perf_counter() - start


class ProblemChunks:
    """Problems the driver holds (evaluation's, which are few), cut by position into chunks of ``chunk_size``;
    each chunk is put in the object store once, as one block. ``generate`` streams a table instead
    (``TableChunks``), built-in sources included."""

    def __init__(self, problems: list[dict], chunk_size: int):
        self.problems, self.chunk_size = problems, chunk_size
        self.ranges = chunk_ranges(len(problems), chunk_size)

    def __len__(self) -> int:
        return len(self.ranges)

    def params(self) -> dict:
        return {"problems": len(self.problems), "chunk_size": self.chunk_size}

    def dataset(self, todo: list[int], types: Columns, out_dir: Path, output_types: Columns):
        import ray
        import ray.data

        refs = []
        for index in todo:
            chunk = self.ranges[index]
            rows = pd.DataFrame(self.problems[chunk.start:chunk.stop]).assign(**{CHUNK: index,
                                                                                  CHUNK_PROBLEMS: len(chunk)})
            refs.append(ray.put(to_arrow(rows, types)))
        return ray.data.from_arrow_refs(refs)


class TableChunks:
    """A table's rows (``tasks/table.py``) by position, each chunk read by a Ray Data task where it runs: the
    driver holds only the chunks' file and row range. Rows of another split are left out; invalid ones go to
    ``quarantine_dir/chunk-NNNNNN.jsonl``; a chunk without a valid problem is written as an empty shard there.
    ``read``: the table's column mapping and kind (``read_chunk``'s options), or None for a table of problems
    as ``write_problem_table`` wrote them (the built-in sources). ``writer``: the task still writing the parts
    (``tasks/puzzle_parts.py``), whose reads wait for them; None when they are all on disk."""

    def __init__(self, chunks: list, read: dict | None, quarantine_dir: Path, writer=None):
        self.chunks, self.read, self.quarantine_dir, self.writer = chunks, read, Path(quarantine_dir), writer

    def __len__(self) -> int:
        return len(self.chunks)

    def params(self) -> dict:
        return {"table_chunks": [[c.file, c.start, c.stop] for c in self.chunks]}

    def rows(self) -> int:
        """The table rows the chunks cover (of a table source: eval and invalid rows included)."""
        return sum(c.stop - c.start for c in self.chunks)

    def problems(self) -> list[dict]:
        """Every train problem, read here (for uses that need a list in the driver)."""
        self.written()
        return [p for chunk in self.chunks for p in read_train(chunk, self.read)[0]]

    def written(self) -> None:
        """Wait until every part is on disk (raises the writer's error)."""
        if self.writer is not None:
            import ray

            ray.get(self.writer)

    def raise_writer_error(self) -> None:
        """Raise the writer's error if it has ended with one; never waits (a job failing for another reason must
        not wait for the parts it no longer needs)."""
        if self.writer is not None:
            import ray

            if ray.wait([self.writer], timeout=0)[0]:
                ray.get(self.writer)

    def merge_quarantine(self, path: Path) -> None:
        """Append every chunk's quarantined rows to ``path``, which the load has just rewritten (the chunk files
        stay: a resumed run skips the chunks that wrote them, and merges them again)."""
        if not self.quarantine_dir.is_dir():
            return
        with open(path, "a") as out:
            for part in sorted(self.quarantine_dir.glob("chunk-*.jsonl")):
                out.write(part.read_text())

    def dataset(self, todo: list[int], types: Columns, out_dir: Path, output_types: Columns):
        import ray.data

        descriptors = [{"chunk": i, "file": self.chunks[i].file, "start": self.chunks[i].start,
                        "stop": self.chunks[i].stop} for i in todo]
        return ray.data.from_items(descriptors, override_num_blocks=len(todo)).map_batches(
            read_table_chunk, batch_size=1, batch_format="pandas", num_cpus=LIGHT_TASK,
            concurrency=LIGHT_TASK_CONCURRENCY, **on_driver_node(),   # the source parts may be the driver's files
            fn_kwargs=dict(read=self.read, types=types, quarantine_dir=str(self.quarantine_dir),
                           out_dir=str(out_dir), output_types=output_types,
                           writers=[self.writer] if self.writer is not None else []))   # a list: passed as a ref


def read_table_chunk(batch: pd.DataFrame, read: dict, types: Columns, quarantine_dir: str, out_dir: str,
                     output_types: Columns, writers: list) -> pa.Table:
    """One chunk's train problems, tagged for the sink (see ``TableChunks``)."""
    from distill_ray.tasks.puzzle_parts import wait_for_part
    from distill_ray.tasks.table import TableChunk

    index = int(batch["chunk"].iat[0])
    chunk = TableChunk(batch["file"].iat[0], int(batch["start"].iat[0]), int(batch["stop"].iat[0]))
    for writer in writers:
        wait_for_part(chunk.file, writer)
    problems, bad = read_train(chunk, read)
    if bad:
        write_quarantine(Path(quarantine_dir) / f"chunk-{index:06d}.jsonl", bad)
    rows = pd.DataFrame(problems, columns=[c for c in types if c not in (CHUNK, CHUNK_PROBLEMS)])
    if not problems:   # nothing will reach the sink: the chunk is done as read
        ShardSet(out_dir).write(index, pa.Table.from_pylist([], schema=pa.schema(
            [(c, t or pa.string()) for c, t in output_types.items()])))
    return to_arrow(rows.assign(**{CHUNK: index, CHUNK_PROBLEMS: len(problems)}), types)


def read_train(chunk, read: dict | None) -> tuple[list[dict], list[dict]]:
    """(train problems, quarantined rows) of a chunk (see ``TableChunks``)."""
    from distill_ray.tasks.table import read_chunk, read_problems

    problems, bad = read_chunk(chunk, **read) if read is not None else (read_problems(chunk), [])
    return [p for p in problems if p["split"] == "train"], bad


def write_quarantine(path: Path, records: list[dict]) -> None:
    import json
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


def split_group_stage(stages: list[Stage]) -> tuple[list[Stage], GroupStage | None]:
    """(the stages Ray Data streams, the final group stage the sink runs or None)."""
    groups = [i for i, stage in enumerate(stages) if isinstance(stage, GroupStage)]
    if groups and groups != [len(stages) - 1]:
        raise ValueError("a group stage can only be the last stage of a streamed pipeline (the sink runs it over "
                         f"each problem's complete rows); got {[s.name for s in stages]}")
    return (stages[:-1], stages[-1]) if groups else (list(stages), None)


def follow_progress(ds, todo: int, total: int, log: Callable[[str], None], out_dir: Path) -> None:
    """Run the stream; a log line per written shard (the sink's counts are the stream's only output), and the
    rows and shards done against wall time as TensorBoard event files (``<output>/tensorboard/<dataset>``)."""
    from distill_ray.tensorboard import ScalarWriter

    written, rows, start = 0, 0, time.perf_counter()
    with ScalarWriter(out_dir.parent / "tensorboard" / out_dir.name) as board:
        for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
            rows += int(batch["rows"].sum())
            seconds = time.perf_counter() - start
            board.add_scalar("stream/rows", rows, int(seconds))
            board.add_scalar("stream/rows_per_s", rows / seconds if seconds else 0.0, int(seconds))
            board.add_scalar("stream/chunks_pending", int(batch["chunks_pending"].iat[-1]), int(seconds))
            for _ in range(int(batch["shards_written"].sum())):
                written += 1
                board.add_scalar("stream/shards_written", written, int(seconds))
                if total > 1:
                    log(f"shard {written}/{todo} of this run written ({total - todo + written}/{total} in all)")


def over_groups(group: GroupStage) -> Callable:
    """The group stage over a frame of whole groups: its ``groups_fn``, or its ``fn`` once per group."""
    if group.groups_fn:
        return group.groups_fn

    def each_group(rows: pd.DataFrame, **kwargs) -> pd.DataFrame:
        return pd.concat([group.fn(part.reset_index(drop=True), **kwargs)
                          for _, part in rows.groupby(group.key, sort=False)], ignore_index=True)

    each_group.__name__ = group.fn.__name__
    return each_group


class ShardSink:
    """Collects each chunk's rows; when a chunk is complete, runs the group stage over each problem's rows and
    writes the chunk's shard. One actor (every row of a chunk must reach the same one); holds only the chunks
    in flight (Ray Data streams the blocks roughly in order, so a few, whatever the number of problems)."""

    def __init__(self, out_dir: str, types: Columns, group: GroupStage | None, fanout: int):
        self.shards = ShardSet(out_dir)
        self.types, self.group, self.fanout = types, group, fanout
        self.group_fn = metered(over_groups(group), group.name) if group else None
        self.pending: dict[int, list[pd.DataFrame]] = defaultdict(list)
        self.arrived: dict[int, int] = defaultdict(int)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        written = 0
        for chunk, rows in batch.groupby(CHUNK, sort=False):
            chunk = int(chunk)
            self.pending[chunk].append(rows)
            self.arrived[chunk] += len(rows)
            if self.arrived[chunk] == int(rows[CHUNK_PROBLEMS].iat[0]) * self.fanout:
                self._write(chunk)
                written += 1
        return pd.DataFrame({"rows": [len(batch)], "shards_written": [written], "chunks_pending": [len(self.pending)]})

    def _write(self, chunk: int) -> None:
        rows = pd.concat(self.pending.pop(chunk), ignore_index=True).drop(columns=[CHUNK, CHUNK_PROBLEMS])
        del self.arrived[chunk]
        if self.group is not None:
            rows = self.group_fn(rows, **self.group.fn_kwargs)
        self.shards.write(chunk, to_arrow(rows, self.types))
