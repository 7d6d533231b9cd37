"""Decontamination (distill_ray/tasks/decontaminate.py): exact and near-duplicate copies of evaluation problems
are dropped with the problem they match; what merely shares a template is not."""

from __future__ import annotations

import json

import pytest

from distill_ray.tasks.decontaminate import EvalIndex, contaminated_count, decontaminate

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")
EVAL = [{"task_id": "eval/1", "question": QUESTION},
        {"task_id": "eval/2", "sat": "def sat(x: int):\n    return x * 3 == 12"}]


def test_an_exact_copy_matches_whatever_its_case_spacing_and_punctuation():
    index = EvalIndex(EVAL, threshold=None)
    copy = {"task_id": "t", "question": "  natalia SOLD clips to 48 of her friends in april and then she sold half "
                                        "as many clips in may How many clips did Natalia sell altogether in April "
                                        "and May"}
    assert index.match(copy) == "contaminated: the same text as evaluation problem eval/1"
    assert index.match({"task_id": "s", "sat": "def sat(x: int):  return x*3 == 12"}).endswith("eval/2")
    near = {"task_id": "n", "question": QUESTION.replace("48", "50")}
    assert index.match(near) is None                                  # the exact check alone


def test_a_near_duplicate_matches_above_the_threshold_and_a_template_sibling_does_not():
    index = EvalIndex(EVAL, threshold=0.8)
    reworded = {"task_id": "n", "question": QUESTION.replace("altogether", "in total")}
    why = index.match(reworded)
    assert why.startswith("contaminated: near-duplicate (Jaccard ~") and why.endswith("eval/1")
    other = {"task_id": "o", "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 "
                                          "minutes of babysitting. How much did she earn?"}
    assert index.match(other) is None
    sibling = {"task_id": "s", "sat": "def sat(x: int):\n    return x * 5 == 20"}   # same template, other numbers
    assert index.match(sibling) is None


def test_decontaminate_keeps_the_rest_in_order_and_quarantines_each_match_with_its_reason():
    problems = [{"task_id": "a", "question": "What is 2 + 2?"}, {"task_id": "b", "question": QUESTION},
                {"task_id": "c", "question": "What is 3 + 3?"}]
    quarantine: list[dict] = []
    kept = list(decontaminate(problems, EvalIndex(EVAL, 0.8), quarantine))
    assert [p["task_id"] for p in kept] == ["a", "c"]
    assert quarantine == [{"task_id": "b", "split": "train",
                           "reason": "contaminated: the same text as evaluation problem eval/1"}]
    assert contaminated_count(quarantine + [{"reason": "not json"}]) == 1
    assert list(decontaminate(problems, None, quarantine)) == problems


def test_mbpp_train_loses_its_copy_of_an_eval_problem(tmp_path, shared_data):
    """MBPP task 928 (train) asks what 427 (test) asks, with 'by using regex' added and the same test."""
    from distill_ray.config import load_config
    from distill_ray.workflow import load_task

    cfg = load_config(None, [f"output_dir={tmp_path}", "task.source=mbpp", f"task.path={shared_data / 'mbpp'}",
                             "task.num_train=1000", "task.num_eval=5"])
    _, train, _ = load_task(cfg)
    assert "mbpp/928" not in {p["task_id"] for p in train} and len(train) == 373
    quarantine = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert [(q["task_id"], q["reason"].split(" (")[0]) for q in quarantine] == [("mbpp/928",
                                                                                "contaminated: near-duplicate")]
    assert quarantine[0]["reason"].endswith("mbpp/427")
    off = load_config(None, [f"output_dir={tmp_path}", "task.source=mbpp", f"task.path={shared_data / 'mbpp'}",
                             "task.num_train=1000", "task.num_eval=5", "task.decontaminate=false"])
    assert len(load_task(off)[1]) == 374
