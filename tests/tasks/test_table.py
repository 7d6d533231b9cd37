"""Task sources as tables: Parquet, JSONL, CSV and a datasets-style Arrow file read by position, columns mapped,
bad rows quarantined with file, row and reason."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from distill_ray.tasks.table import TableChunk, plan_chunks, read_chunk, table_files

ROWS = [{"problem": f"Tom has {i} apples and buys 1. How many?", "answer": i + 1} for i in range(7)]


def write(path, rows, fmt: str):
    table = pa.Table.from_pylist(rows)
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        pcsv.write_csv(table, path)
    else:   # what datasets' save_to_disk writes: an Arrow stream
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return path


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv", "arrow"])
def test_every_format_reads_by_position_with_mapped_columns(tmp_path, fmt):
    file = write(tmp_path / f"data-00000.{fmt}", ROWS, fmt)
    chunks = plan_chunks(table_files(tmp_path), chunk_size=3)
    assert [(c.start, c.stop) for c in chunks] == [(0, 3), (3, 6), (6, 7)]
    problems, bad = read_chunk(chunks[1], {"question": "problem", "expected": "answer"}, kind="gsm8k")
    assert not bad and [p["question"] for p in problems] == [r["problem"] for r in ROWS[3:6]]
    assert [p["expected"] for p in problems] == [4.0, 5.0, 6.0] and {p["kind"] for p in problems} == {"gsm8k"}
    assert [p["task_id"] for p in problems] == [f"table/{file.name}:{i}" for i in (3, 4, 5)]   # the position


def test_chunks_never_span_files_and_skip_counts_across_files(tmp_path):
    write(tmp_path / "a.parquet", ROWS[:4], "parquet")
    write(tmp_path / "b.parquet", ROWS[4:], "parquet")
    (tmp_path / "notes.txt").write_text("not data")
    chunks = plan_chunks(table_files(tmp_path), chunk_size=3, skip=5)   # the first 5 rows: the exemplar pool
    assert [(c.file.rsplit("/", 1)[1], c.start, c.stop) for c in chunks] == [("b.parquet", 1, 3)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        table_files(tmp_path / "empty")


def test_bad_rows_are_quarantined_with_file_row_and_reason(tmp_path):
    rows = [{"id": 7, "question": "ok?", "expected": 1.0, "kind": "gsm8k"},
            {"id": 8, "question": "", "expected": 1.0, "kind": "gsm8k"},
            {"id": 9, "question": "what kind?", "expected": 2.0, "kind": "riddle"},
            {"id": 10, "question": "no answer", "expected": None, "kind": "gsm8k"}]
    file = write(tmp_path / "t.parquet", rows, "parquet")
    problems, bad = read_chunk(TableChunk(str(file), 0, 4), {}, kind=None)
    assert [p["task_id"] for p in problems] == ["table/7", "table/10"] and problems[1]["expected"] is None
    assert [(b["file"], b["row"]) for b in bad] == [(str(file), 1), (str(file), 2)]
    assert "question" in bad[0]["reason"] and "unknown kind" in bad[1]["reason"]
    problems, bad = read_chunk(TableChunk(str(file), 0, 1), {"question": "prompt"}, kind=None)
    assert not problems and "no column 'prompt'" in bad[0]["reason"]
