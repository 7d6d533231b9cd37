"""The problem record every task source produces, and a checker for it.

Problems become Arrow/Parquet columns downstream, so every dict carries every key with one type per key.
"""

from __future__ import annotations

import json
import math

import pyarrow as pa

# Keys of every problem dict, in this order, with their Arrow types (the pipeline's source columns).
PROBLEM_COLUMNS: dict[str, pa.DataType] = {
    "task_id": pa.string(),      # stable and unique: "puzzles/add_const/d1/s17", "gsm8k/train/12", "p3/Study_1:0"
    "split": pa.string(),        # "train" | "eval"
    "source": pa.string(),       # "puzzles" | "gsm8k" | "p3" | "humaneval" | "mbpp" | "jsonl"
    "family": pa.string(),       # puzzle family, P3 family, or "gsm8k"
    "difficulty": pa.int64(),    # 1 = trivial
    "kind": pa.string(),         # "p3": find x with sat(x) is True | "gsm8k": solution() returns the number |
                                 # "asserts": the program's functions pass the tests
    "question": pa.string(),     # what a prompt shows (the sat source, or the word problem)
    "sat": pa.string(),          # p3: source of `def sat(x: T, ...)`; "" otherwise
    "ans_type": pa.string(),     # p3: "int", "str", "List[int]", ...; "" otherwise
    "expected": pa.float64(),    # gsm8k: the final number; None otherwise
    "tests": pa.string(),        # asserts: assert lines, or HumanEval's check(candidate) code; "" otherwise
    "entry_point": pa.string(),  # asserts: the function under test ("" for plain assert lines that name it)
    "reference": pa.string(),    # a correct candidate in the exact form a model must write (few-shot exemplar)
}

SPLITS = ("train", "eval")
KINDS = ("p3", "gsm8k", "asserts")

_STR_COLUMNS = tuple(c for c, t in PROBLEM_COLUMNS.items() if t == pa.string())


def make_problem(*, task_id: str, split: str, source: str, family: str, difficulty: int, kind: str,
                 question: str, sat: str = "", ans_type: str = "", expected: float | None = None,
                 tests: str = "", entry_point: str = "", reference: str = "") -> dict:
    """Build a problem dict with every column, in PROBLEM_COLUMNS order."""
    problem = {
        "task_id": task_id, "split": split, "source": source, "family": family, "difficulty": int(difficulty),
        "kind": kind, "question": question, "sat": sat, "ans_type": ans_type,
        "expected": None if expected is None else float(expected),
        "tests": tests, "entry_point": entry_point, "reference": reference,
    }
    return problem


def check_problem(problem: dict) -> None:
    """Raise ValueError naming the first key whose presence, type or value is wrong."""
    missing = [c for c in PROBLEM_COLUMNS if c not in problem]
    if missing:
        raise ValueError(f"problem {problem.get('task_id')!r} lacks keys {missing}")
    for column in _STR_COLUMNS:
        if not isinstance(problem[column], str):
            raise ValueError(f"problem {problem['task_id']!r}: {column} must be str, got {problem[column]!r}")
    if type(problem["difficulty"]) is not int:
        raise ValueError(f"problem {problem['task_id']!r}: difficulty must be int")
    if problem["split"] not in SPLITS or problem["kind"] not in KINDS:
        raise ValueError(f"problem {problem['task_id']!r}: bad split {problem['split']!r} or kind {problem['kind']!r}")
    expected = problem["expected"]
    if expected is not None and not (type(expected) is float and math.isfinite(expected)):
        raise ValueError(f"problem {problem['task_id']!r}: expected must be a finite float or None")


def json_object(line: str) -> dict:
    """The JSON object on one input line; ValueError with the reason (the quarantine's) when it is not one."""
    if not line.strip():
        raise ValueError("empty line")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON: {error}") from None
    if not isinstance(record, dict):
        raise ValueError(f"not a JSON object but {type(record).__name__}")
    return record
