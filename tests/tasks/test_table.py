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


def test_problems_are_written_as_parts_while_they_are_drawn(tmp_path):
    """write_problem_table consumes its problems a part at a time: when problem k is drawn, the parts before
    its own are already on disk (a stream of millions never sits whole in the driver)."""
    from distill_ray.tasks.puzzles import load_puzzles
    from distill_ray.tasks.table import read_problems, write_problem_table

    train, _ = load_puzzles(num_train=10, num_eval=0)
    written_when_drawn = []

    def drawn():
        for k, problem in enumerate(train):
            written = [f for f in tmp_path.glob("part-*.parquet") if f.name != "part-000009.parquet"]
            written_when_drawn.append((k, len(written)))
            yield problem

    (tmp_path / "part-000009.parquet").write_bytes(b"stale")   # from an earlier, longer write
    chunks = write_problem_table(drawn(), tmp_path, chunk_size=4)
    assert all(parts == k // 4 for k, parts in written_when_drawn)
    assert [(c.start, c.stop) for c in chunks] == [(0, 4), (0, 4), (0, 2)]
    assert sorted(p.name for p in tmp_path.glob("part-*")) == [f"part-00000{i}.parquet" for i in range(3)]
    assert [p for c in chunks for p in read_problems(c)] == train   # every column, as written


def test_generate_streams_a_built_in_source_from_its_written_parts(ray_cluster, tmp_path):
    """generate's source for the puzzles: the same exemplar pool and train problems as load_task's lists."""
    from distill_ray.config import load_config
    from distill_ray.workflow import load_task, load_train_source

    cfg = load_config(None, [f"output_dir={tmp_path}", "task.num_train=9", "prompt.pool_size=3", "chunk_size=4"])
    exemplars, train = load_train_source(cfg)
    want_exemplars, want_train, _ = load_task(cfg)
    assert exemplars == want_exemplars and train.read is None and len(train) == 3
    assert train.problems() == want_train and train.rows() == 9
    assert sorted(p.name for p in (tmp_path / "source").iterdir()) == [f"part-00000{i}.parquet" for i in range(3)]
