import json

import pandas as pd
import pytest

from distill_ray.pipeline import TeacherActor, TeacherSpec, VerifySpec, build_prompts, sampling_stages, vote_stage
from distill_ray.prompts import Exemplar
from distill_ray.stages import BatchStage, check_flow, describe
from distill_ray.teachers import SamplingSettings

SPEC = TeacherSpec(name="t", engine="hf", model="smollm2", sampling=SamplingSettings(n=2))
PROBLEM_COLUMNS = ("task_id", "kind", "family", "question", "sat", "ans_type", "expected", "tests", "entry_point")


def test_the_pipeline_data_flow_is_consistent():
    stages = sampling_stages(SPEC, [], VerifySpec(limits={}), seed=0) + [vote_stage(False)]
    columns = check_flow(PROBLEM_COLUMNS, stages)
    for column in ("prompt", "completion", "program", "passed", "answer", "vote_answer", "keep"):
        assert column in columns
    assert [row["stage"] for row in describe(stages)] == ["prompt", "teacher", "extract", "verify", "vote"]


def test_a_stage_reading_an_unwritten_column_is_rejected_before_any_work():
    stages = sampling_stages(SPEC, [], VerifySpec(limits={}), seed=0)
    with pytest.raises(ValueError, match="'verify' reads \\['sat'\\]"):
        check_flow(tuple(c for c in PROBLEM_COLUMNS if c != "sat"), stages)
    bad = [BatchStage("x", reads=("nope",), writes=(), fn=lambda b: b)]
    with pytest.raises(ValueError, match="nope"):
        check_flow(PROBLEM_COLUMNS, bad)


@pytest.mark.slow
def test_teacher_actor_samples_n_candidates_per_prompt_with_the_real_model():
    problems = pd.DataFrame({"task_id": ["a", "b"], "kind": ["p3", "p3"], "family": ["add", "rep"],
                             "question": ["def sat(x: int) -> bool:\n    return x + 2 == 5",
                                          "def sat(s: str) -> bool:\n    return s == 'ab' * 2"]})
    shots = [Exemplar("def sat(x: int) -> bool:\n    return x - 1 == 4", "def sol():\n    return 4 + 1")]
    batch = build_prompts(problems, shots, num_shots=1, strategy="fixed", seed=0)
    actor = TeacherActor("smollm2", "hf", "smollm2", {"n": 3, "max_new_tokens": 8, "temperature": 0.8,
                                                      "top_k_logprobs": 2})
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
    from distill_ray.pipeline import row_check

    row = pd.DataFrame({"kind": ["p3"], "program": ["def sol():\n    return 1"], "sat": ["def sat(x: int):\n    return x == 1"],
                        "ans_type": ["int"], "expected": pd.array([missing], dtype=object), "tests": [""],
                        "entry_point": [""]})
    check = row_check(next(row.itertuples(index=False)))
    assert check.expected is None and check.kind == "p3" and check.sat.startswith("def sat")
    number = row.assign(expected=[42])
    assert row_check(next(number.itertuples(index=False))).expected == 42.0
