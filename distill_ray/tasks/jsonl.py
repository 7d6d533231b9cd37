"""Your own problems, one JSON object a line: the task source for data that is not GSM8K or P3.

Each line is one of::

    {"id": "q1", "kind": "gsm8k", "question": "Tom has 3 apples...", "expected": 7}
    {"id": "p1", "kind": "p3", "sat": "def sat(x: int):\\n    return x + 2 == 5", "ans_type": "int"}
    {"id": "f1", "kind": "asserts", "question": "Write add(a, b).", "tests": ["assert add(1, 2) == 3"]}

Optional keys: ``split`` ("train", the default, or "eval"), ``family`` (groups problems for retrieval and
reports), ``difficulty`` (int), ``reference`` (a correct answer in the form the model must write, used as a
few-shot exemplar), ``question`` for p3 (defaults to ``sat``). A gsm8k record without ``expected`` (or with
``null``) is unlabelled: it is solved and voted on, but no verdict can say it is right.

Bad lines never stop the load and are never dropped silently: each becomes a quarantine record
``{"line": n (1-based), "reason": str, "raw": the line's first 200 characters}``. Reasons: empty line, bytes
that are not UTF-8, invalid JSON, not an object, a missing or mistyped key, an unknown kind, an empty or
over-long question, an expected answer that is not a finite number, and an id seen on an earlier line.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from distill_ray.tasks.schema import KINDS, SPLITS, json_object, make_problem

SOURCE = "jsonl"
# Longer questions are quarantined: far beyond any teacher's context, and a sign of a broken export.
MAX_QUESTION_CHARS = 16_000


def read_problems_jsonl(path: str | Path, max_question_chars: int = MAX_QUESTION_CHARS) -> tuple[list[dict], list[dict]]:
    """(problems, quarantined) from one JSONL file, problems in file order."""
    problems, quarantined, first_line_of = [], [], {}
    with open(path, "rb") as handle:
        for index, raw in enumerate(handle):
            try:
                problem = parse_problem(raw.decode("utf-8"), max_question_chars)
                first = first_line_of.get(problem["task_id"])
                if first:
                    user_id = problem["task_id"].removeprefix(f"{SOURCE}/")
                    raise ValueError(f"duplicate id {user_id!r} (first on line {first})")
            except ValueError as error:   # UnicodeDecodeError is a ValueError too
                quarantined.append({"line": index + 1, "reason": str(error),
                                    "raw": raw.decode("utf-8", errors="replace").rstrip("\r\n")[:200]})
                continue
            first_line_of[problem["task_id"]] = index + 1
            problems.append(problem)
    return problems, quarantined


def parse_problem(line: str, max_question_chars: int = MAX_QUESTION_CHARS) -> dict:
    """The problem dict of one line; ValueError with the reason when the line is not a valid problem."""
    return parse_record(json_object(line), max_question_chars)


def parse_record(record: dict, max_question_chars: int = MAX_QUESTION_CHARS, source: str = SOURCE,
                 default_kind: str | None = None) -> dict:
    """The problem dict of one record (a JSON line, a table row) with this module's keys; ValueError with the
    reason when it is not a valid problem. ``default_kind``: the kind of a record without one."""
    problem_id = _text(record, "id")
    kind = _text(record, "kind") if default_kind is None or record.get("kind") is not None else default_kind
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    split = record.get("split", "train")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    difficulty = record.get("difficulty", 1)
    if type(difficulty) is not int:
        raise ValueError(f"difficulty must be an integer, got {difficulty!r}")
    sat = _text(record, "sat") if kind == "p3" else ""
    ans_type = _text(record, "ans_type") if kind == "p3" else ""
    if kind == "p3" and "def sat(" not in sat:
        raise ValueError("sat has no 'def sat(' definition")
    tests = _tests(record) if kind == "asserts" else ""
    question = _text(record, "question") if kind != "p3" or "question" in record else sat
    if len(question) > max_question_chars:
        raise ValueError(f"question has {len(question)} characters, more than the limit of {max_question_chars}")
    return make_problem(task_id=f"{source}/{problem_id}", split=split, source=source,
                        family=record.get("family") or kind, difficulty=difficulty, kind=kind, question=question,
                        sat=sat, ans_type=ans_type, expected=_expected(record) if kind == "gsm8k" else None,
                        tests=tests, entry_point=record.get("entry_point") or "",
                        reference=record.get("reference") or "")


def _text(record: dict, key: str) -> str:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {type(value).__name__}")
    if not value or not value.strip():
        raise ValueError(f"missing or empty {key!r}")
    return value


def _tests(record: dict) -> str:
    """Assert tests as source: a string, or a list of assert lines."""
    tests = record.get("tests")
    if isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests):
        return "\n".join(tests)
    return _text(record, "tests")


def _expected(record: dict) -> float | None:
    value = record.get("expected")
    if value is None:
        return None
    # bool is an int to Python, but true/false is no answer to a word problem.
    if type(value) not in (int, float):
        raise ValueError(f"expected must be a number, got {value!r}")
    if not math.isfinite(value):   # json.loads reads NaN, Infinity and -Infinity
        raise ValueError(f"expected must be finite, got {value!r}")
    return float(value)


def load_jsonl(path: str | Path, *, num_train: int, num_eval: int, seed: int = 0,
               max_question_chars: int = MAX_QUESTION_CHARS,
               quarantine: list[dict] | None = None) -> tuple[list[dict], list[dict]]:
    """(train, eval): each split's problems in a seeded order, cut to the requested sizes."""
    problems, bad = read_problems_jsonl(path, max_question_chars)
    if quarantine is not None:
        quarantine.extend(bad)
    result = []
    for split, count in (("train", num_train), ("eval", num_eval)):
        chosen = [p for p in problems if p["split"] == split]
        random.Random(f"jsonl/{split}/{seed}").shuffle(chosen)
        result.append(chosen[:count])
    return result[0], result[1]
