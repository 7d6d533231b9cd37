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

from distill_ray.shards import Manifest, ShardSet, chunk_ranges
from distill_ray.stages import ActorStage, Columns, GroupStage, Stage, apply_stages, check_flow, rows_per_row, to_arrow
from distill_ray.stages.base import metered

# Settings that change how fast rows are made, never which rows: a resumed run may use others.
RESOURCE_KEYS = frozenset({"actors", "cpus_per_actor", "gpus_per_actor", "actor_memory_gib", "batch_size",
                           "torch_threads", "workers_per_actor", "partitions", "engine_options"})
CHUNK = "_chunk"   # the chunk a row belongs to, from the source to the sink (never written)


def row_params(config: dict) -> dict:
    """``config`` without its resource settings (recursively): what a resumed run must repeat exactly."""
    if isinstance(config, dict):
        return {k: row_params(v) for k, v in config.items() if k not in RESOURCE_KEYS}
    if isinstance(config, list):
        return [row_params(v) for v in config]
    return config


def run_in_shards(problems: list[dict], source: Columns, stages: list[Stage], out_dir: Path, params: dict,
                  chunk_size: int, resume: bool = True, log: Callable[[str], None] = print) -> float:
    """Run ``stages`` over ``problems`` (whose columns and types are ``source``) into
    ``out_dir/part-NNNNNN.parquet``, typed as the stages declare; returns the seconds spent. A group stage
    (the vote) may only come last: the sink runs it over each problem's complete rows.

    With ``resume=False`` an existing output is deleted first; otherwise it is continued (same ``params``
    required, else ValueError naming both)."""
    manifest = Manifest.for_output(out_dir)
    if not resume:
        shutil.rmtree(out_dir, ignore_errors=True)
        manifest.path.unlink(missing_ok=True)
    chunks = chunk_ranges(len(problems), chunk_size)
    manifest.start({**params, "problems": len(problems), "chunk_size": chunk_size})
    shards = ShardSet(out_dir)
    shards.remove_temp_files()
    done = shards.done()
    if done:
        log(f"resuming {out_dir}: {len(done)} of {len(chunks)} shards already written, skipping them")
    todo = {index: chunk for index, chunk in enumerate(chunks) if index not in done}
    streamed, group = split_group_stage(stages)
    types = check_flow(source, stages)
    start = time.perf_counter()
    if todo:
        sink = ActorStage("sink", reads=(), writes={}, cls=ShardSink, actors=1, batch_size=None,
                          # No CPU reserved: it must never take the CPU the prompt/extract tasks wait for (a
                          # config that leaves them exactly one of 2 CPUs would deadlock on any fraction).
                          cpus_per_actor=0, init_kwargs=dict(
                              out_dir=str(out_dir), types=types, group=group,
                              expected={i: len(c) * rows_per_row(streamed) for i, c in todo.items()}))
        ds = sink.apply(apply_stages(chunk_source(problems, todo, source), {**source, CHUNK: pa.int64()}, streamed))
        follow_progress(ds, len(todo), len(chunks), log)
    missing = sorted(set(todo) - shards.done())
    if missing:
        raise RuntimeError(f"{out_dir}: chunks {missing[:10]} got fewer rows than expected and were not written; "
                           "rerun with the same output to redo them")
    return time.perf_counter() - start


def split_group_stage(stages: list[Stage]) -> tuple[list[Stage], GroupStage | None]:
    """(the stages Ray Data streams, the final group stage the sink runs or None)."""
    groups = [i for i, stage in enumerate(stages) if isinstance(stage, GroupStage)]
    if groups and groups != [len(stages) - 1]:
        raise ValueError("a group stage can only be the last stage of a streamed pipeline (the sink runs it over "
                         f"each problem's complete rows); got {[s.name for s in stages]}")
    return (stages[:-1], stages[-1]) if groups else (list(stages), None)


def chunk_source(problems: list[dict], todo: dict[int, range], source: Columns):
    """The chunks still to do, one block each, every row tagged with its chunk: each chunk is put in the object
    store once, so the driver holds no copy beyond the list it was given."""
    import ray
    import ray.data

    types = {**source, CHUNK: pa.int64()}
    refs = []
    for index, chunk in todo.items():
        rows = pd.DataFrame(problems[chunk.start:chunk.stop]).assign(**{CHUNK: index})
        refs.append(ray.put(to_arrow(rows, types)))
    return ray.data.from_arrow_refs(refs)


def follow_progress(ds, todo: int, total: int, log: Callable[[str], None]) -> None:
    """Run the stream; a log line per written shard (the sink's counts are the stream's only output)."""
    written = 0
    for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
        for _ in range(int(batch["shards_written"].sum())):
            written += 1
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

    def __init__(self, out_dir: str, types: Columns, group: GroupStage | None, expected: dict[int, int]):
        self.shards = ShardSet(out_dir)
        self.types, self.group, self.expected = types, group, expected
        self.group_fn = metered(over_groups(group), group.name) if group else None
        self.pending: dict[int, list[pd.DataFrame]] = defaultdict(list)
        self.arrived: dict[int, int] = defaultdict(int)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        written = 0
        for chunk, rows in batch.groupby(CHUNK, sort=False):
            chunk = int(chunk)
            self.pending[chunk].append(rows)
            self.arrived[chunk] += len(rows)
            if self.arrived[chunk] == self.expected[chunk]:
                self._write(chunk)
                written += 1
        return pd.DataFrame({"rows": [len(batch)], "shards_written": [written], "chunks_pending": [len(self.pending)]})

    def _write(self, chunk: int) -> None:
        rows = pd.concat(self.pending.pop(chunk), ignore_index=True).drop(columns=[CHUNK])
        del self.arrived[chunk]
        if self.group is not None:
            rows = self.group_fn(rows, **self.group.fn_kwargs)
        self.shards.write(chunk, to_arrow(rows, self.types))
