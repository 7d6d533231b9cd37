"""Bad input is quarantined with its line number and reason; good lines around it load; config errors stop
the run before any work, naming the field."""

import json

import pytest

from distill_ray.config import ConfigError, load_config
from distill_ray.tasks import load_problems
from distill_ray.tasks.jsonl import read_problems_jsonl

GOOD_GSM8K = {"id": "g1", "kind": "gsm8k", "question": "Tom has 3 apples and buys 4. How many?", "expected": 7}
GOOD_P3 = {"id": "p1", "kind": "p3", "sat": "def sat(x: int):\n    return x + 2 == 5", "ans_type": "int"}


def write_lines(path, lines: list[bytes]):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_every_kind_of_bad_line_is_quarantined_with_its_line_and_reason(tmp_path):
    lines = [
        json.dumps(GOOD_GSM8K).encode(),                                      # 1 good
        b'{"id": "x", "kind": "gsm8k", "question": "broken',                  # 2 invalid JSON
        b"",                                                                  # 3 empty
        b'{"id": "caf\xe9", "kind": "gsm8k", "question": "q", "expected": 1}',  # 4 not UTF-8
        json.dumps({"kind": "gsm8k", "question": "no id", "expected": 1}).encode(),           # 5 missing id
        json.dumps({"id": "e", "kind": "gsm8k", "question": "  ", "expected": 1}).encode(),   # 6 empty question
        json.dumps({"id": "h", "kind": "gsm8k", "question": "x" * 20_000, "expected": 1}).encode(),  # 7 huge
        b'{"id": "n", "kind": "gsm8k", "question": "q", "expected": NaN}',    # 8 NaN
        b'{"id": "i", "kind": "gsm8k", "question": "q", "expected": Infinity}',  # 9 inf
        json.dumps({**GOOD_GSM8K, "question": "same id again"}).encode(),     # 10 duplicate id
        json.dumps({"id": "k", "kind": "essay", "question": "q"}).encode(),   # 11 unknown kind
        json.dumps(["a", "list"]).encode(),                                   # 12 not an object
        json.dumps({"id": "s", "kind": "p3", "sat": "return True", "ans_type": "int"}).encode(),  # 13 no def sat
        json.dumps({"id": "b", "kind": "gsm8k", "question": "q", "expected": True}).encode(),  # 14 bool answer
        json.dumps(GOOD_P3).encode(),                                         # 15 good
    ]
    problems, quarantined = read_problems_jsonl(write_lines(tmp_path / "in.jsonl", lines))

    assert [p["task_id"] for p in problems] == ["jsonl/g1", "jsonl/p1"]
    reasons = {q["line"]: q["reason"] for q in quarantined}
    assert sorted(reasons) == list(range(2, 15))
    assert "invalid JSON" in reasons[2] and reasons[3] == "empty line" and "utf-8" in reasons[4]
    assert "'id'" in reasons[5] and "'question'" in reasons[6] and "20000 characters" in reasons[7]
    assert "finite" in reasons[8] and "finite" in reasons[9]
    assert "duplicate id 'g1'" in reasons[10] and "line 1" in reasons[10]
    assert "unknown kind" in reasons[11] and "not a JSON object" in reasons[12]
    assert "def sat" in reasons[13] and "number" in reasons[14]
    assert all(q["raw"] is not None and len(q["raw"]) <= 200 for q in quarantined)


def test_good_records_become_complete_problems(tmp_path):
    unlabelled = {"id": "u", "kind": "gsm8k", "question": "How many legs do 3 cats have?", "split": "eval"}
    path = write_lines(tmp_path / "in.jsonl", [json.dumps(r).encode() for r in (GOOD_GSM8K, GOOD_P3, unlabelled)])
    quarantine = []
    train, eval_ = load_problems("jsonl", num_train=10, num_eval=10, path=str(path), quarantine=quarantine)
    assert quarantine == []
    by_id = {p["task_id"]: p for p in train + eval_}
    assert by_id["jsonl/g1"]["expected"] == 7.0 and by_id["jsonl/g1"]["split"] == "train"
    assert by_id["jsonl/p1"]["question"] == GOOD_P3["sat"] and by_id["jsonl/p1"]["ans_type"] == "int"
    assert by_id["jsonl/u"]["expected"] is None and by_id["jsonl/u"]["split"] == "eval"


def test_load_problems_reports_the_file_of_each_quarantined_line(tmp_path):
    path = write_lines(tmp_path / "in.jsonl", [json.dumps(GOOD_GSM8K).encode(), b"not json"])
    quarantine = []
    train, _ = load_problems("jsonl", num_train=5, num_eval=0, path=str(path), quarantine=quarantine)
    assert len(train) == 1
    assert quarantine == [{"file": str(path), "line": 2, "reason": quarantine[0]["reason"], "raw": "not json"}]


def test_a_config_error_names_the_field_before_any_work(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("task:\n  source: csv\n  num_train: -3\n")
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert "task.source" in str(error.value) and "task.num_train" in str(error.value)
