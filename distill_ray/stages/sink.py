"""sink: the puzzle job's one sink actor, which deduplicates across the whole job and writes each chunk's shards when it is complete.

Every row of a chunk (kept or rejected) reaches the sink, so a chunk is complete when ``Plan.rows_in(chunk)``
rows have arrived; then its rejected rows go to ``DIR.rejected/part-C.parquet`` and its kept rows to
``DIR/part-C.parquet`` (written last: its existence marks the chunk done; see ``distill_ray.shards``), with the
chunk's counts per family and fate in the shard's metadata. Memory: the dedupe index plus the rows of chunks
still in flight (Ray Data streams blocks roughly in order, so that is a few chunks, whatever N is).

On start (a fresh job, a resumed one, or Ray restarting this actor) the index is rebuilt from the kept rows of
the shards already written, so a resumed job never keeps a puzzle twice.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pyarrow as pa

from distill_ray.shards import ShardSet
from distill_ray.stages.base import ActorStage
from distill_ray.stages.generate import PUZZLE_COLUMNS, WRITES as ROW_COLUMNS
from distill_ray.synth.config import Plan, PuzzleJobConfig
from distill_ray.synth.dedupe import Deduper, KeyMaker, near_scope

READS = tuple(c for c in ROW_COLUMNS if c not in ("trusted",))
# The sink turns rows into counts: per batch, how many rows of each family met each fate, and two levels.
WRITES = {"family": pa.string(), "fate": pa.string(), "count": pa.int64()}
KEPT = "kept"


def _schema(names: tuple[str, ...]) -> pa.Schema:
    return pa.schema([(n, PUZZLE_COLUMNS.get(n, pa.string())) for n in names])


# What the job writes: kept puzzles, and rejected rows with their reason.
OUTPUT_SCHEMA = _schema(("id", "source", "family", "difficulty", "ans_type", "sat", "sol"))
REJECT_SCHEMA = _schema(("id", "source", "family", "difficulty", "reason", "detail", "sat", "sol"))


def rejected_dir(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".rejected")


def rebuild(deduper: Deduper, shards: ShardSet, scope: str, threshold: float) -> int:
    """Put the kept puzzles of every written shard into ``deduper``; returns how many."""
    maker, count = KeyMaker(threshold), 0
    for _, table in shards.iter_tables(["sat", "source"]):
        sats, sources = table["sat"].to_pylist(), table["source"].to_pylist()
        deduper.admit([maker.exact_key(s) for s in sats],
                      [maker.band_keys(s) if near_scope(src, scope) else None for s, src in zip(sats, sources)])
        count += len(sats)
    return count


class PuzzleSink:
    """Dedupe + shard writing, in a pool of exactly one actor. Returns per-batch counts for progress."""

    def __init__(self, output: str, plan: dict, scope: str, threshold: float):
        self.plan = Plan(**plan)
        self.shards = ShardSet(output)
        self.rejects = ShardSet(rejected_dir(output))
        self.deduper = Deduper()
        self.rebuilt = rebuild(self.deduper, self.shards, scope, threshold)
        self.pending: dict[int, dict] = defaultdict(lambda: {"seen": 0, "kept": [], "rejected": [],
                                                             "counts": Counter()})

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        live = [i for i, r in enumerate(batch["reject"]) if not r]
        bands = batch["band_keys"].tolist()
        fates = self.deduper.admit([int(batch["exact_key"].iat[i]) for i in live],
                                   [list(bands[i]) if bands[i] is not None and len(bands[i]) else None for i in live])
        fate = batch["reject"].tolist()
        for i, f in zip(live, fates):
            fate[i] = f
        out, written = Counter(), 0
        for row, f in zip(batch.itertuples(index=False), fate):
            chunk = self.pending[row.chunk]
            chunk["seen"] += 1
            chunk["counts"][f"{row.family}|{f}"] += 1
            out[(row.family, f)] += 1
            if f == KEPT:
                chunk["kept"].append((row.id, row.source, row.family, row.difficulty, row.ans_type, row.sat, row.sol))
            else:
                teacher = row.source == "teacher"   # procedural rows regenerate from their id; keep teacher text
                chunk["rejected"].append((row.id, row.source, row.family, row.difficulty, f, row.detail,
                                          row.sat if teacher else "", row.sol if teacher else ""))
            if chunk["seen"] == self.plan.rows_in(row.chunk):
                self._write(row.chunk)
                written += 1
        rows = [{"family": fam, "fate": f, "count": n} for (fam, f), n in out.items()]
        rows.append({"family": "", "fate": "_chunks_written", "count": written})
        rows.append({"family": "", "fate": "_chunks_pending", "count": len(self.pending)})   # memory held here
        return pd.DataFrame(rows)

    def _write(self, chunk: int) -> None:
        data = self.pending.pop(chunk)
        meta = {"rows": data["seen"], "counts": dict(data["counts"])}
        self.rejects.write(chunk, _table(data["rejected"], REJECT_SCHEMA), meta)
        self.shards.write(chunk, _table(data["kept"], OUTPUT_SCHEMA), meta)   # last: marks the chunk done


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    return pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(columns, schema)], schema=schema)


def build(cfg: PuzzleJobConfig, plan: Plan) -> ActorStage:
    return ActorStage("sink", reads=READS, writes=WRITES, cls=PuzzleSink,
                      init_kwargs=dict(output=cfg.output, plan=asdict(plan), scope=cfg.near_dup_scope,
                                       threshold=cfg.near_dup_threshold),
                      # the dedupe index (~48 MB per million kept puzzles) and the chunks in flight
                      actors=1, cpus_per_actor=0.1, batch_size=None, memory_gib=1.0,
                      driver_node=True)   # its buffered chunks never go down with a worker node
