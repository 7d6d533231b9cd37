"""Resumable sharded output: work split into numbered chunks, one atomically written Parquet shard per chunk.

A job that writes through this module can be killed at any moment and rerun with the same output path: a chunk
is done exactly when its shard file exists, and a shard file only ever appears complete (written under a hidden
temporary name, flushed, then ``os.replace``d into place), so the rerun skips done chunks, redoes the others and
never writes a row twice. Nothing here knows what the rows are.

API::

    chunks = chunk_ranges(total=1_000_000, chunk_size=10_000)   # [range(0, 10000), range(10000, 20000), ...]
    shards = ShardSet("out/dataset")                             # part-000000.parquet, part-000001.parquet, ...
    manifest = Manifest.for_output("out/dataset")                # out/dataset.manifest.json
    manifest.start({"num": 1_000_000, "chunk_size": 10_000})     # ValueError if a previous run used other params
    todo = [c for c in range(len(chunks)) if c not in shards.done()]
    shards.write(chunk, table, meta={"rows_in": 10_000})        # atomic; meta travels in the Parquet footer
    shards.read_meta(chunk)                                      # {"rows_in": 10000}
    manifest.update(stats=...)                                   # atomic JSON rewrite

Readers see only finished shards: temporary files start with ``.``, which pyarrow and ``datasets`` skip.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

META_KEY = b"distill_ray.chunk_meta"


def chunk_ranges(total: int, chunk_size: int, start: int = 0) -> list[range]:
    """[start, start + total) cut into consecutive ranges of ``chunk_size`` (the last one may be shorter)."""
    if total < 0 or chunk_size < 1:
        raise ValueError(f"need total >= 0 and chunk_size >= 1, got {total}, {chunk_size}")
    return [range(a, min(a + chunk_size, start + total)) for a in range(start, start + total, chunk_size)]


def _write_atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``path``: readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class ShardSet:
    """The shards of one output directory: ``{prefix}-{chunk:06d}.parquet``, one per finished chunk."""

    def __init__(self, directory: str | Path, prefix: str = "part"):
        self.directory = Path(directory)
        self.prefix = prefix
        self._pattern = re.compile(rf"{re.escape(prefix)}-(\d+)\.parquet")
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, chunk: int) -> Path:
        return self.directory / f"{self.prefix}-{chunk:06d}.parquet"

    def done(self) -> set[int]:
        """Chunks whose shard exists (and is therefore complete)."""
        return {int(m.group(1)) for name in os.listdir(self.directory) if (m := self._pattern.fullmatch(name))}

    def write(self, chunk: int, table: pa.Table, meta: dict | None = None) -> Path:
        """Write the chunk's shard atomically; ``meta`` (JSON-able) is stored in the file's schema metadata."""
        if meta is not None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                   META_KEY: json.dumps(meta).encode()})
        path = self.path(chunk)
        _write_atomic(path, lambda tmp: pq.write_table(table, tmp))
        return path

    def read_meta(self, chunk: int) -> dict:
        metadata = pq.read_schema(self.path(chunk)).metadata or {}
        return json.loads(metadata[META_KEY]) if META_KEY in metadata else {}

    def read(self, chunk: int, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(chunk), columns=columns)

    def iter_tables(self, columns: list[str] | None = None) -> Iterator[tuple[int, pa.Table]]:
        """(chunk, table) of every finished shard, in chunk order, one shard in memory at a time."""
        for chunk in sorted(self.done()):
            yield chunk, self.read(chunk, columns)

    def remove_temp_files(self) -> int:
        """Delete temporary files left by a killed writer; returns how many."""
        stale = [p for p in self.directory.iterdir() if p.name.startswith(f".{self.prefix}-") and ".tmp." in p.name]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)


class Manifest:
    """A JSON file beside the output (``DIR.manifest.json``): the job's parameters, plus whatever it reports."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def for_output(cls, directory: str | Path) -> "Manifest":
        directory = Path(directory)
        return cls(directory.with_name(directory.name + ".manifest.json"))

    def load(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def start(self, params: dict) -> dict:
        """Record ``params`` for a new run, or check that a resumed run uses the same ones (they decide which
        rows each chunk holds, so resuming with others would mix two different jobs)."""
        previous = self.load()
        if previous.get("params") not in (None, params):
            raise ValueError(f"{self.path} was written with other parameters {previous['params']}; "
                             f"resume with the same ones, or choose another output path (now: {params})")
        return self.update(params=params)

    def update(self, **fields) -> dict:
        data = {**self.load(), **fields}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str)))
        return data
