"""Task sources as tables: Parquet, JSON lines, CSV, or Arrow files (a Hugging Face ``datasets`` folder saved
with ``save_to_disk``), one file or a folder of them, read by position.

A table's rows are addressed by their position in the concatenation of its files (sorted by name), so a job can
cut them into chunks, read each chunk where it runs (a Ray Data task, not the driver) and resume by position
without an id column. ``columns`` maps the problem's keys (those of a ``jsonl`` record: id, kind, question,
expected, sat, ans_type, tests, entry_point, split, family, difficulty, reference) to the table's column names,
e.g. ``{question: problem, expected: answer}``; a key the table has under its own name needs no entry; ``kind``
is the kind of rows without a kind column. A row without an id gets its position (``<file name>:<row>``).
A row that is not a valid problem is quarantined with its file, row and reason, as a JSON line would be.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import pyarrow as pa

from distill_ray.tasks.jsonl import MAX_QUESTION_CHARS, parse_record

if TYPE_CHECKING:
    from distill_ray.tasks.decontaminate import EvalIndex

SOURCE = "table"
SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".arrow")


@dataclass(frozen=True)
class TableChunk:
    """Rows ``start:stop`` of one file (positions within that file)."""
    file: str
    start: int
    stop: int


def table_files(path: str | Path) -> list[Path]:
    """The data files of a table: the file itself, or a folder's files of a known format, sorted by name."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"task.path {str(path)!r} is neither a file nor a folder")
    files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ValueError(f"task.path {str(path)!r} holds no {'/'.join(SUFFIXES)} files")
    return files


def read_file(file: str | Path) -> pa.Table:
    """A whole file as an Arrow table (Arrow files memory-mapped: a datasets folder is not copied)."""
    file = Path(file)
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(file)
    if file.suffix in (".jsonl", ".json"):
        import pyarrow.json as pj

        return pj.read_json(file)
    if file.suffix == ".csv":
        import pyarrow.csv as pc

        return pc.read_csv(file)
    with pa.memory_map(str(file)) as source:   # datasets' save_to_disk writes Arrow streams
        return pa.ipc.open_stream(source).read_all()


def row_count(file: str | Path) -> int:
    file = Path(file)
    if file.suffix == ".parquet":   # from the footer, without reading the data
        import pyarrow.parquet as pq

        return pq.ParquetFile(file).metadata.num_rows
    return read_file(file).num_rows


def plan_chunks(files: list[Path], chunk_size: int, skip: int = 0, limit: int | None = None) -> list[TableChunk]:
    """The rows after the first ``skip`` (and at most ``limit`` of them) cut into chunks of ``chunk_size`` (a
    chunk never spans two files)."""
    chunks, left = [], limit
    for file in files:
        rows = row_count(file)
        start = min(skip, rows)
        skip -= start
        stop = rows if left is None else min(rows, start + left)
        chunks += [TableChunk(str(file), a, min(a + chunk_size, stop)) for a in range(start, stop, chunk_size)]
        left = None if left is None else left - (stop - start)
    return chunks


def read_chunk(chunk: TableChunk, columns: dict[str, str], kind: str | None,
               max_question_chars: int = MAX_QUESTION_CHARS, exclude: frozenset = frozenset(),
               contamination: "EvalIndex | None" = None) -> tuple[list[dict], list[dict]]:
    """(problems, quarantined) of a chunk's rows, in row order; problems whose task_id is in ``exclude`` (the
    exemplar pool) are left out, train problems that match an evaluation problem of ``contamination`` are
    quarantined (tasks/decontaminate.py)."""
    rows = read_file(chunk.file).slice(chunk.start, chunk.stop - chunk.start).to_pylist()
    problems, quarantined = [], []
    for offset, row in enumerate(rows):
        position = chunk.start + offset
        try:
            problem = to_problem(row, columns, kind, f"{Path(chunk.file).name}:{position}", max_question_chars)
        except ValueError as error:
            quarantined.append({"file": chunk.file, "row": position, "reason": str(error),
                                "raw": json.dumps(row, default=str)[:200]})
            continue
        if problem["task_id"] in exclude:
            continue
        why = contamination.match(problem) if contamination is not None and problem["split"] == "train" else None
        if why is None:
            problems.append(problem)
        else:
            quarantined.append({"file": chunk.file, "row": position, "task_id": problem["task_id"], "reason": why})
    return problems, quarantined


def to_problem(row: dict, columns: dict[str, str], kind: str | None, position_id: str,
               max_question_chars: int = MAX_QUESTION_CHARS) -> dict:
    """A table row as a problem: its columns renamed by ``columns``, the id its position where it has none."""
    missing = [column for column in columns.values() if column not in row]
    if missing:
        raise ValueError(f"the table has no column {missing[0]!r} (task.columns)")
    record = {**row, **{key: row[column] for key, column in columns.items()}}
    record["id"] = position_id if record.get("id") is None else str(record["id"])
    return parse_record(record, max_question_chars, source=SOURCE, default_kind=kind)


def part_file(directory: str | Path, index: int) -> Path:
    """The ``index``-th part ``write_problem_table`` writes in ``directory``."""
    return Path(directory) / f"part-{index:06d}.parquet"


def plan_parts(directory: str | Path, count: int, chunk_size: int) -> list[TableChunk]:
    """The chunks ``write_problem_table`` writes for ``count`` problems, known before any is drawn: one part of
    ``chunk_size`` rows each, the last one shorter."""
    return [TableChunk(str(part_file(directory, index)), 0, min(chunk_size, count - start))
            for index, start in enumerate(range(0, count, chunk_size))]


def write_problem_table(problems: Iterable[dict], directory: str | Path, chunk_size: int) -> list[TableChunk]:
    """Problems (built-in sources' dicts, already valid) written as Parquet files of ``chunk_size`` rows,
    ``part-NNNNNN.parquet``, each atomically, while ``problems`` is consumed (never held whole); returns one
    chunk per file. The files of an earlier write with more parts are removed."""
    import pyarrow.parquet as pq

    from distill_ray.tasks.schema import PROBLEM_COLUMNS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(list(PROBLEM_COLUMNS.items()))
    chunks = []
    for index, part in enumerate(batched(problems, chunk_size)):
        path = part_file(directory, index)
        tmp = directory / f".{path.name}.tmp"
        pq.write_table(pa.Table.from_pylist(part, schema=schema), tmp)
        tmp.replace(path)
        chunks.append(TableChunk(str(path), 0, len(part)))
    for stale in sorted(directory.glob("part-*.parquet"))[len(chunks):]:
        stale.unlink()
    return chunks


def read_problems(chunk: TableChunk) -> list[dict]:
    """A chunk of a table ``write_problem_table`` wrote, as problem dicts (no re-validation: they were)."""
    return read_file(chunk.file).slice(chunk.start, chunk.stop - chunk.start).to_pylist()


def batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while part := list(itertools.islice(iterator, size)):
        yield part
