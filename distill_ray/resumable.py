"""Resumable sampling: a stage list run over the problems chunk by chunk, one atomic Parquet shard per chunk.

A chunk's shard appears only complete (``shards.ShardSet``), and every row of a problem lands in its chunk's
shard (the vote groups rows by problem, and a chunk holds whole problems), so a job killed at any moment and
rerun with the same output path skips the chunks already written and redoes only the rest: generation is
at-least-once, writes are idempotent, and the final dataset holds every row exactly once. The parameters that
decide the rows are recorded in ``<output>.manifest.json``; resuming with different ones is refused (it would
mix two datasets), while resources (actors, CPUs, batch sizes) may change between runs.

A kill loses at most the chunk in flight; a chunk costs one Ray Data execution (actor pools start per chunk),
so chunks should be large enough to amortize teacher start-up (``chunk_size``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa

from distill_ray.shards import Manifest, ShardSet, chunk_ranges
from distill_ray.stages import Columns, Stage, apply_stages, check_flow, to_arrow

# Settings that change how fast rows are made, never which rows: a resumed run may use others.
RESOURCE_KEYS = frozenset({"actors", "cpus_per_actor", "gpus_per_actor", "actor_memory_gib", "batch_size",
                           "torch_threads", "workers_per_actor", "partitions", "engine_options"})


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
    ``out_dir/part-NNNNNN.parquet``, typed as the stages declare; returns the seconds spent.

    With ``resume=False`` an existing output is deleted first; otherwise it is continued (same ``params``
    required, else ValueError naming both)."""
    import ray

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
    types = check_flow(source, stages)
    start = time.perf_counter()
    for index, chunk in enumerate(chunks):
        if index in done:
            continue
        part = problems[chunk.start:chunk.stop]
        ds = apply_stages(ray.data.from_items(part), source, stages).map_batches(
            to_arrow, fn_kwargs=dict(types=types), batch_format="pandas")
        tables = ray.get(ds.to_arrow_refs())
        # Blocks agree on every declared column type; "permissive" only unifies columns nobody declared.
        shards.write(index, pa.concat_tables(tables, promote_options="permissive"))
        if len(chunks) > 1:
            log(f"shard {index + 1}/{len(chunks)} written ({len(part)} problems)")
    return time.perf_counter() - start
