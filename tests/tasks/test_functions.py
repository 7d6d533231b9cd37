"""HumanEval and MBPP load from the real files as `asserts` problems whose references pass the real verifier."""

import json

import pytest

from distill_ray.tasks import check_problem, load_problems
from distill_ray.tasks.functions import mbpp_entry_point, read_humaneval, read_mbpp
from distill_ray.verify import Check, SandboxLimits, Verifier


def verdicts(problems):
    checks = [Check("asserts", p["reference"], tests=p["tests"], entry_point=p["entry_point"]) for p in problems]
    # 30 s: MBPP 123's reference (amicable numbers up to 9999) needs about 10 s on a loaded 2-core machine.
    with Verifier(SandboxLimits(timeout_s=30), workers=2) as verifier:
        return verifier.verify(checks)


def test_every_humaneval_reference_passes_and_a_wrong_body_fails(shared_data):
    problems = read_humaneval(shared_data / "humaneval")
    assert len(problems) == 130 and len({p["task_id"] for p in problems}) == 130
    for p in problems:
        check_problem(p)
        assert p["kind"] == "asserts" and p["split"] == "eval" and f"def {p['entry_point']}(" in p["question"]
    assert [v.status for v in verdicts(problems)] == ["pass"] * 130
    wrong = [{**p, "reference": p["question"] + "    return None\n"} for p in problems[:10]]
    assert not any(v.passed for v in verdicts(wrong))


# References that cannot pass the sandbox by design: their tests build objects of classes the program defines
# (only plain data crosses between the candidate's process and the judge's). The test below fails if any other
# reference fails, or if one of these starts to pass unnoticed.
MBPP_KNOWN_LIMITS = {"mbpp/601": "Pair objects", "mbpp/927": "Node objects", "mbpp/367": "Node objects"}


def test_mbpp_splits_follow_the_papers_convention_and_references_pass(shared_data):
    splits = {s: read_mbpp(shared_data / "mbpp", s) for s in ("prompt", "eval", "validation", "train")}
    assert {s: len(p) for s, p in splits.items()} == {"prompt": 10, "eval": 500, "validation": 90, "train": 374}
    assert {p["split"] for p in splits["train"]} == {"train"} and {p["split"] for p in splits["eval"]} == {"eval"}
    problems = [p for ps in splits.values() for p in ps]
    for p in problems:
        check_problem(p)
        assert p["entry_point"] in p["question"] and "\r" not in p["reference"]
    failed = {p["task_id"]: v.detail for p, v in zip(problems, verdicts(problems)) if not v.passed}
    assert set(failed) == set(MBPP_KNOWN_LIMITS), failed


def test_the_entry_point_is_the_first_non_builtin_call():
    assert mbpp_entry_point(["assert set(similar_elements((3, 4), (4, 5))) == set((4,))"]) == "similar_elements"
    assert mbpp_entry_point(["assert math.isclose(area(2), 12.56, rel_tol=0.01)"]) == "area"
    with pytest.raises(ValueError):
        mbpp_entry_point(["assert 1 == 1"])


def test_load_problems_serves_both(shared_data):
    train, eval_ = load_problems("humaneval", num_train=5, num_eval=7, path=str(shared_data / "humaneval"))
    assert (len(train), len(eval_)) == (0, 7)
    train, eval_ = load_problems("mbpp", num_train=5, num_eval=3, path=str(shared_data / "mbpp"), seed=1)
    assert (len(train), len(eval_)) == (5, 3)
    assert not {p["task_id"] for p in train} & {p["task_id"] for p in eval_}


def test_a_reference_named_like_a_builtin_is_still_the_entry_point():
    assert mbpp_entry_point(["assert sum(10,15) == 6"], "def sum(a, b):\n    return 6") == "sum"


def test_reference_answers_survive_prompting_and_extraction(shared_data):
    """A model that answered with the reference, wrapped the way models do (a continuation followed by a test
    call; a chat answer with the code in a fence), is extracted back to a program that passes."""
    from distill_ray.extract import extract_program
    from distill_ray.prompts import response_prefix

    humaneval = read_humaneval(shared_data / "humaneval")[:40]
    mbpp = read_mbpp(shared_data / "mbpp", "eval")[:40]
    candidates = []
    for p in humaneval:
        prefix = response_prefix("asserts", p["question"])
        body = p["reference"][len(prefix):]
        candidates.append({**p, "reference": extract_program(prefix, body + f"\n\nprint({p['entry_point']})\n",
                                                             "asserts")})
    for p in mbpp:
        assert response_prefix("asserts", p["question"]) == ""
        answer = f"Here you go:\n```python\n{p['reference']}\n```\nCall {p['entry_point']}() to use it."
        candidates.append({**p, "reference": extract_program("", answer, "asserts")})
    assert [v.status for v in verdicts(candidates)] == ["pass"] * len(candidates)


@pytest.mark.slow
def test_the_teacher_is_evaluated_on_humaneval_and_generates_on_mbpp(ray_cluster, shared_data, tmp_path):
    import pyarrow.parquet as pq

    from distill_ray import workflow
    from tests.pipelines.test_end_to_end import small_config

    cfg = small_config(tmp_path / "he", **{"task.source": "humaneval", "task.path": str(shared_data / "humaneval"),
                                          "eval.max_new_tokens": 32})
    result = workflow.evaluate(cfg, {"teacher": "smollm2"})["teacher"]
    assert result["problems"] == 3 and result["samples"] == 6
    rows = pq.read_table(tmp_path / "he" / "eval" / "teacher").to_pandas()
    assert (rows["status"] != "rejected").all(), rows["detail"].tolist()
    for row in rows.itertuples():   # the program is the HumanEval prompt, continued, judged by its check()
        assert row.program.startswith(row.question) and row.status in ("pass", "fail", "error", "timeout")

    cfg = small_config(tmp_path / "mbpp", **{"task.source": "mbpp", "task.path": str(shared_data / "mbpp"),
                                            "task.num_train": 2, "teacher.samples": 2,
                                            "teacher.max_new_tokens": 48})
    stats = workflow.generate(cfg)
    rows = pq.read_table(stats["dataset"]).to_pandas()
    assert len(rows) == 4 and set(rows["kind"]) == {"asserts"}
    shots = {m["content"] for m in json.loads(rows["messages"].iloc[0]) if m["role"] == "user"}
    prompt_split = {p["question"] for p in read_mbpp(shared_data / "mbpp", "prompt")}
    assert len(shots) == 4 and len(shots & prompt_split) == 3   # 3 shots from MBPP's prompt split + the task
    assert not (rows["status"] == "rejected").any()
