"""The distillation job as one stream: the sink writes a chunk's shard once every row of it has arrived (voted
per problem), the teacher pools start once per job whatever the number of chunks, and a resumed job reads and
samples only the chunks not yet written."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from distill_ray.config import TeacherConfig, VoteConfig
from distill_ray.resumable import CHUNK, CHUNK_PROBLEMS, ShardSink, split_group_stage
from distill_ray.stages import check_flow, vote
from distill_ray.stages.base import BatchStage, GroupStage


def candidates(task: str, chunk: int, verdicts: list[bool], problems: int) -> pd.DataFrame:
    return pd.DataFrame({"task_id": task, "teacher": "t", "sample_index": range(len(verdicts)), "kind": "p3",
                         "source": "puzzles", "expected": None, "answer": "x", "passed": verdicts,
                         "program": [f"def sol(): return {i}" for i in range(len(verdicts))], CHUNK: chunk,
                         CHUNK_PROBLEMS: problems})


def test_the_sink_writes_a_chunk_only_when_all_its_rows_arrived_and_votes_each_problem(tmp_path):
    stage = vote.build(VoteConfig(), [TeacherConfig(name="t")])
    types = check_flow(list(candidates("a", 0, [True], 1).columns.drop([CHUNK, CHUNK_PROBLEMS])), [stage])
    sink = ShardSink(str(tmp_path), types, stage, fanout=2)   # chunk 0: 2 problems x 2 samples, chunk 1: 1 x 2
    a, b = candidates("a", 0, [True, False], 2), candidates("b", 0, [False, False], 2)
    c = candidates("c", 1, [True, True], 1)
    # Rows of the two chunks interleaved, a problem's rows split across batches.
    assert sink(pd.concat([a.iloc[:1], c]))["shards_written"].tolist() == [1]       # chunk 1 complete
    assert [p.name for p in tmp_path.glob("*.parquet")] == ["part-000001.parquet"]
    assert sink(a.iloc[1:])["shards_written"].tolist() == [0]                        # chunk 0: 2 of 4 rows
    assert not (tmp_path / "part-000000.parquet").exists()
    assert sink(b)["shards_written"].tolist() == [1]                                 # 4 of 4: written
    written = pq.read_table(tmp_path / "part-000000.parquet").to_pandas()
    assert not {CHUNK, CHUNK_PROBLEMS} & set(written.columns) and len(written) == 4
    # Voted per problem: a's verified row is kept, b has nothing verified.
    kept = written.groupby("task_id")["keep"].sum().to_dict()
    assert kept == {"a": 1, "b": 0}
    assert sink.pending == {}


def test_a_group_stage_can_only_come_last():
    def same(batch):
        return batch

    group = GroupStage("vote", reads=(), writes={}, key="task_id", fn=same)
    step = BatchStage("step", reads=(), writes={}, fn=same)
    assert split_group_stage([step, group]) == ([step], group)
    assert split_group_stage([step]) == ([step], None)
    with pytest.raises(ValueError, match="last stage"):
        split_group_stage([group, step])


@pytest.mark.slow
def test_the_teacher_pool_starts_once_for_all_chunks_and_a_resume_samples_only_the_rest(ray_cluster, tmp_path):
    from ray._private import state

    from distill_ray.config import load_config
    from distill_ray.shards import ShardSet
    from distill_ray.workflow import generate

    task = {"source": "puzzles", "num_train": 12, "num_eval": 2, "families": ["add_const"]}
    overrides = [f"output_dir={tmp_path}", "task.source=puzzles", "task.num_train=12", "task.num_eval=2",
                 "task.families=[add_const]", "prompt.pool_size=4", "chunk_size=4", "teacher.engine=replay",
                 "teacher.model=references", "teacher.samples=3", f"mlflow_uri=file:{tmp_path / 'mlruns'}",
                 f"teacher.engine_options={{task: {task}, task_seed: 0, pool_size: 4, wrong_fraction: 0.3}}"]

    def teacher_actors() -> set[str]:
        """Every teacher pool actor this cluster ever started (Ray Data names them after the fused operator)."""
        return {actor_id for actor_id, a in state.actors().items() if "(TeacherActor)" in a["ActorClassName"]}

    before = teacher_actors()
    stats = generate(load_config(None, overrides))
    assert len(teacher_actors() - before) == 1                      # one pool of one actor for the 3 chunks
    shards = ShardSet(tmp_path / "dataset")
    assert shards.done() == {0, 1, 2} and stats["candidates"] == 12 * 3
    rows = pq.read_table(tmp_path / "dataset").to_pandas()
    assert rows.groupby("task_id").size().eq(3).all() and rows["task_id"].nunique() == 12
    assert 0 < rows["passed"].sum() < len(rows)                     # the wrong share fails, references pass
    from tests.tensorboard_events import scalars

    board = scalars(tmp_path / "tensorboard" / "dataset")           # the stream's progress, for TensorBoard
    assert board["stream/rows"][-1][1] == 12 * 3 and board["stream/shards_written"][-1][1] == 3
    import mlflow                                                   # and the dataset's numbers, for MLflow

    client = mlflow.MlflowClient(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    (run,) = client.search_runs([client.get_experiment_by_name("distill-ray").experiment_id])
    assert run.data.metrics["generate/candidates"] == 12 * 3 and run.info.status == "FINISHED"

    # A job killed after chunk 1: the rerun streams chunk 1 alone and leaves the others untouched.
    kept = {c: shards.path(c).stat().st_mtime_ns for c in (0, 2)}
    shards.path(1).unlink()
    before = teacher_actors()
    generate(load_config(None, overrides))
    assert len(teacher_actors() - before) == 1 and shards.done() == {0, 1, 2}
    assert {c: shards.path(c).stat().st_mtime_ns for c in (0, 2)} == kept
    again = pq.read_table(tmp_path / "dataset").to_pandas()
    assert len(again) == len(rows) and again["task_id"].nunique() == 12


def test_a_puzzle_source_that_runs_out_fails_the_job_with_its_own_error(ray_cluster, tmp_path):
    """The parts' writer fails after the stream started (root has 39 distinct puzzles at difficulty 1): the job
    fails with the writer's error, not only with the error of a read that waited for a part."""
    from distill_ray.config import load_config
    from distill_ray.workflow import generate

    overrides = [f"output_dir={tmp_path}", "task.source=puzzles", "task.num_train=60", "task.families=[root]",
                 "prompt.pool_size=0", "chunk_size=16", "teacher.engine=replay", "teacher.model=references",
                 # the engine knows the 32 puzzles of the two parts written before the writer fails
                 "teacher.engine_options={task: {source: puzzles, num_train: 32, num_eval: 4, families: [root]}, "
                 "pool_size: 0}"]
    with pytest.raises(ValueError, match="give only 39 distinct train puzzles"):
        generate(load_config(None, overrides))


def test_generation_stats_add_up_shard_by_shard():
    """The driver reads the dataset one shard at a time: stats over the shards equal stats over all rows."""
    import numpy as np

    from distill_ray.workflow import STATS_COLUMNS, generation_stats

    rng = np.random.default_rng(0)
    tasks = np.repeat([f"t{i}" for i in range(30)], 4)
    rows = pd.DataFrame({"task_id": tasks, "teacher": rng.choice(["a", "b"], len(tasks)),
                         "passed": rng.random(len(tasks)) < 0.4, "duplicate": rng.random(len(tasks)) < 0.1,
                         "label_type": rng.choice(["hard", "soft"], len(tasks)),
                         "status": rng.choice(["passed", "failed", "timeout"], len(tasks)),
                         "completion_tokens": rng.integers(1, 30, len(tasks)), "gen_seconds": rng.random(len(tasks))})
    rows["keep"] = rows["passed"] & ~rows["duplicate"]
    rows["agreement"] = rows.groupby("task_id")["passed"].transform("all")
    rows = rows[STATS_COLUMNS]
    whole = generation_stats([rows], 10.0, 4)
    parts = generation_stats([rows.iloc[:48], rows.iloc[48:88], rows.iloc[88:]], 10.0, 4)   # whole tasks each
    teachers_in_parts, teachers = parts.pop("per_teacher"), whole.pop("per_teacher")
    assert teachers_in_parts.keys() == teachers.keys() == {"a", "b"}
    assert all(teachers_in_parts[t] == pytest.approx(teachers[t]) for t in teachers)
    assert parts.pop("status_counts") == whole.pop("status_counts") == rows["status"].value_counts().to_dict()
    assert parts == pytest.approx(whole)
    assert whole["problems"] == 30 and whole["candidates"] == 120
    assert whole["verified"] == rows["passed"].sum() and whole["k"] == 4
    assert teachers["a"]["candidates"] + teachers["b"]["candidates"] == 120


@pytest.mark.slow
def test_a_table_source_streams_from_files_with_mapped_columns_and_quarantines_bad_rows(ray_cluster, tmp_path):
    """A Parquet folder with its own column names, read by Ray Data chunk by chunk: the pool and eval rows are
    carved off, bad rows and a copy of an eval row are quarantined with file and row, and a resume reads only
    the chunk not written."""
    import json

    import pyarrow as pa

    from distill_ray.config import load_config
    from distill_ray.shards import ShardSet
    from distill_ray.teachers.replay import reference_completion
    from distill_ray.workflow import generate, load_task

    write = pq.write_table

    rows = [{"uid": f"q{i}", "text": f"def sat(x: int):\n    return x == {i}", "ans": "int",
             "part": "eval" if i % 10 == 9 else "train", "ref": f"def sol():\n    return {i}"} for i in range(40)]
    rows[5]["text"] = "no sat here"                                            # quarantined: no def sat(
    rows[7]["text"] = "def sat(x: int):\n    return x  ==  9"                   # quarantined: eval row q9's text
    table_dir = tmp_path / "table"
    table_dir.mkdir()
    write(pa.Table.from_pylist(rows[:24]), table_dir / "part-0.parquet")
    write(pa.Table.from_pylist(rows[24:]), table_dir / "part-1.parquet")
    task = {"source": "table", "path": str(table_dir), "kind": "p3", "num_train": 30, "num_eval": 3,
            "columns": {"id": "uid", "question": "text", "sat": "text", "ans_type": "ans", "split": "part",
                        "reference": "ref"}}
    overrides = [f"output_dir={tmp_path / 'out'}", f"task={json.dumps(task)}", "prompt.pool_size=4",
                 "prompt.num_shots=1", "chunk_size=8", "teacher.engine=replay", "teacher.samples=2",
                 f"teacher.model={tmp_path / 'recorded'}"]
    cfg = load_config(None, overrides)
    exemplars, train, eval_ = load_task(cfg)
    assert [e.question for e in exemplars] == [rows[i]["text"] for i in range(4)]
    assert [p["task_id"] for p in eval_] == ["table/q9", "table/q19", "table/q29"]
    assert [(c.start, c.stop) for c in train.chunks] == [(0, 8), (8, 16), (16, 24), (0, 8), (8, 10)]  # 34 rows
    problems = train.problems()
    assert len(problems) == 34 - 4 - 3 - 2 and not {"table/q5", "table/q7"} & {p["task_id"] for p in problems}

    # The replay engine serves what a "teacher" recorded: here each problem's reference, as a dataset.
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    write(pa.Table.from_pylist(
        [{"question": p["question"], "sample_index": 0, "completion": reference_completion(p),
          "finished": True} for p in problems]), recorded / "part-000000.parquet")
    stats = generate(cfg)
    assert stats["problems"] == len(problems) and stats["candidates"] == 2 * len(problems)
    assert stats["verified"] == stats["candidates"]                          # the references pass
    quarantine = [json.loads(line) for line in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    assert [(q["file"].rsplit("/", 1)[1], q["row"]) for q in quarantine] == [("part-0.parquet", 5),
                                                                              ("part-0.parquet", 7)]
    assert quarantine[1]["reason"] == "contaminated: the same text as evaluation problem table/q9"
    assert stats["contaminated"] == 1
    shards = ShardSet(tmp_path / "out" / "dataset")
    assert shards.done() == set(range(5))
    shards.path(3).unlink()
    stats = generate(cfg)                                                      # resumed: chunk 3 only
    assert stats["candidates"] == 2 * len(problems) and shards.done() == set(range(5))
    assert len((tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()) == 2 == stats["contaminated"] + 1
