import json

import pandas as pd
import pytest

import pyarrow as pa

from distill_ray.config import PromptConfig, TeacherConfig, VerifyConfig, VoteConfig
from distill_ray.pipelines.distill import distill_stages, output_columns
from distill_ray.prompts import Exemplar
from distill_ray.stages import ActorStage, BatchStage, check_flow, describe, to_arrow
from distill_ray.stages.prompt import build_prompts
from distill_ray.stages.teacher import TeacherActor
from distill_ray.tasks.schema import PROBLEM_COLUMNS

TEACHER = TeacherConfig(name="t", samples=2)


def stages(vote: bool = True):
    return distill_stages([TEACHER], PromptConfig(), VerifyConfig(), [], seed=0, vote_cfg=VoteConfig() if vote else None)


def test_the_pipeline_data_flow_is_consistent_and_every_column_has_one_type():
    columns = check_flow(PROBLEM_COLUMNS, stages())
    for column in ("prompt", "completion", "program", "passed", "answer", "vote_answer", "keep"):
        assert column in columns
    assert all(isinstance(t, pa.DataType) for t in columns.values()), [c for c, t in columns.items() if t is None]
    assert [row["stage"] for row in describe(stages())] == ["prompt", "teacher", "extract", "verify", "vote"]


def test_a_stage_reading_an_unwritten_column_is_rejected_before_any_work():
    with pytest.raises(ValueError, match="'verify' reads \\['sat'\\]"):
        check_flow(tuple(c for c in PROBLEM_COLUMNS if c != "sat"), stages(vote=False))
    bad = [BatchStage("x", reads=("nope",), writes={}, fn=lambda b: b)]
    with pytest.raises(ValueError, match="nope"):
        check_flow(PROBLEM_COLUMNS, bad)


def test_an_all_missing_column_keeps_its_declared_type():
    # A batch where no program answered: pandas sees an object column of None, Arrow would infer `null`, and a
    # dataset's shards would disagree. The declared type wins.
    batch = pd.DataFrame({"task_id": ["a"], "answer": [None], "expected": [None], "passed": [False]})
    table = to_arrow(batch, output_columns(stages()))
    assert table.schema.field("answer").type == pa.string() and table.schema.field("expected").type == pa.float64()


def test_the_readme_stage_table_is_generated_from_the_declarations():
    from distill_ray.docs import generated_sections, readme_sections

    assert readme_sections() == generated_sections(), "README drifted: run `make docs`"


@pytest.mark.slow
def test_teacher_actor_samples_n_candidates_per_prompt_with_the_real_model():
    problems = pd.DataFrame({"task_id": ["a", "b"], "kind": ["p3", "p3"], "family": ["add", "rep"],
                             "question": ["def sat(x: int) -> bool:\n    return x + 2 == 5",
                                          "def sat(s: str) -> bool:\n    return s == 'ab' * 2"]})
    shots = [Exemplar("def sat(x: int) -> bool:\n    return x - 1 == 4", "def sol():\n    return 4 + 1")]
    batch = build_prompts(problems, shots, num_shots=1, strategy="fixed", seed=0)
    actor = TeacherActor(TeacherConfig(name="smollm2", samples=3, max_new_tokens=8, temperature=0.8,
                                       top_k_logprobs=2), seed=0)
    rows = actor(batch)
    assert len(rows) == 6
    assert list(rows["task_id"]) == ["a"] * 3 + ["b"] * 3
    assert list(rows["sample_index"]) == [0, 1, 2] * 2
    assert (rows["teacher"] == "smollm2").all()
    assert rows["prompt"].iloc[0].endswith("def sol():\n    return ")
    assert "<|im_start|>system" in rows["prompt"].iloc[0]  # rendered with the model's chat template
    assert (rows["completion_tokens"].between(1, 8)).all() and (rows["prompt_tokens"] > 20).all()
    assert json.loads(rows["messages"].iloc[0])[-1]["content"] == problems["question"][0]
    # Provenance, and the top-k logprobs of every generated token (what kd can train on without the teacher).
    assert (rows["engine"] == "hf").all() and json.loads(rows["sampling"].iloc[0])["top_k_logprobs"] == 2
    for tokens, stored in zip(rows["completion_tokens"], rows["logprobs"]):
        assert len(json.loads(stored)) == tokens and all(len(top) == 2 for top in json.loads(stored))


@pytest.mark.parametrize("missing", [None, float("nan"), pd.NA])
def test_row_check_treats_any_missing_expected_as_none(missing):
    from distill_ray.stages.verify import row_check

    row = pd.DataFrame({"kind": ["p3"], "program": ["def sol():\n    return 1"], "sat": ["def sat(x: int):\n    return x == 1"],
                        "ans_type": ["int"], "expected": pd.array([missing], dtype=object), "tests": [""],
                        "entry_point": [""]})
    check = row_check(next(row.itertuples(index=False)))
    assert check.expected is None and check.kind == "p3" and check.sat.startswith("def sat")
    number = row.assign(expected=[42])
    assert row_check(next(number.itertuples(index=False))).expected == 42.0


def test_the_puzzle_pipeline_is_one_stage_list_with_its_teacher_branch_only_when_asked():
    from distill_ray.pipelines.puzzles import SOURCE, puzzle_stages
    from distill_ray.stages import UnionStage
    from distill_ray.synth.config import Plan, PuzzleJobConfig

    procedural = PuzzleJobConfig(num=10, output="x")
    names = [s.name for s in puzzle_stages(procedural, Plan.of(procedural), frozenset())]
    assert names == ["generate", "check", "sink"]
    both = PuzzleJobConfig(num=10, output="x", teacher_prompts=3)
    stages = puzzle_stages(both, Plan.of(both), frozenset())
    assert isinstance(stages[0], UnionStage)
    assert [[s.name for s in b] for b in stages[0].branches] == [["generate"], ["puzzle_prompts", "puzzle_teacher"]]
    assert {"fate", "count"} <= set(check_flow(SOURCE, stages))


def test_a_union_whose_branch_misses_a_column_is_rejected():
    from distill_ray.stages import UnionStage

    short = BatchStage("short", reads=("id",), writes={"a": pa.int64()}, fn=lambda b: b)
    full = BatchStage("full", reads=("id",), writes={"a": pa.int64(), "b": pa.int64()}, fn=lambda b: b)
    with pytest.raises(ValueError, match="'short' does not write \\['b'\\]"):
        UnionStage("u", reads=("id",), writes=full.writes, branches=((full,), (short,)))


def test_the_teacher_branch_takes_only_prompt_ids_and_generate_only_seeds():
    from distill_ray.stages.generate import procedural_rows
    from distill_ray.stages.puzzle_teacher import prompt_rows

    ids = pd.DataFrame({"id": range(12)})
    seeds = procedural_rows(ids.copy(), ["add_const"], [1], seed=0, chunk_size=5, done=frozenset({1}), num=8)
    assert sorted(int(i.rsplit("s", 1)[1]) for i in seeds["id"]) == [0, 1, 2, 3, 4]   # 5..7: chunk 1 is done
    prompts = prompt_rows(ids.copy(), num=8, procedural_chunks=2, prompts_per_chunk=2, done=frozenset({3}))
    assert prompts["prompt"].tolist() == [0, 1] and prompts["chunk"].tolist() == [2, 2]   # 2, 3: chunk 3 is done


def test_actor_pools_reserve_memory_by_default_and_light_tasks_no_cpu(monkeypatch):
    from distill_ray.stages import teacher as teacher_stage

    # A reservation keeps Ray Data from fusing the prompt / extract tasks into the pools: they reserve no CPU, so
    # the default config (teacher 1 CPU, verifier 0.5) never waits on 2 CPUs (the pipeline tests run it).
    assert [s.cpus for s in stages() if s.name in ("prompt", "extract")] == [0, 0]
    assert [None if s.memory_gib is None else "set" for s in stages() if isinstance(s, ActorStage)] == ["set"] * 2
    assert TeacherConfig().actor_memory_gib == "auto" and VerifyConfig().actor_memory_gib == 0.5
    no = distill_stages([TeacherConfig(actor_memory_gib=None)], PromptConfig(), VerifyConfig(actor_memory_gib=None),
                        [], seed=0)
    assert [s.memory_gib for s in no if isinstance(s, ActorStage)] == [None, None]
    estimate, calls = teacher_stage.actor_memory_gib, []
    monkeypatch.setattr(teacher_stage, "actor_memory_gib", lambda *a: calls.append(a) or 1.5)
    asked = distill_stages([TeacherConfig()], PromptConfig(), VerifyConfig(), [], seed=0)
    pools = [s for s in asked if isinstance(s, ActorStage)]
    assert not calls   # building the list loads no model: the estimate runs when the stage does
    assert [p.memory_gib() if callable(p.memory_gib) else p.memory_gib for p in pools] == [1.5, 0.5]
    assert calls == [("hf", "smollm2", "auto")]
    assert estimate("openai", "served-model") == estimate("replay", "references") == 0.5   # no weights here
    assert estimate("hf", "smollm2", 3.0) == 3.0       # a number is taken as it is


@pytest.mark.slow
def test_the_teacher_memory_estimate_follows_the_model_size():
    from distill_ray.stages.teacher import actor_memory_gib

    small, large = actor_memory_gib("hf", "smollm2"), actor_memory_gib("hf", "gemma3")
    assert 1.0 < small < large < 4.0   # 135M and 270M parameters in float32, twice, plus the runtime
