"""Function-writing tasks checked by assert tests: HumanEval and MBPP (kind ``asserts``).

- HumanEval (``HumanEval.jsonl``): ``question`` is the prompt (imports, signature, docstring) the model
  continues; ``tests`` is the file's ``check(candidate)`` code and ``entry_point`` the function it checks. It has
  no train split: every problem is an eval problem.
- MBPP (``mbpp.jsonl``): ``question`` is the statement plus its first test (the paper's prompt shape, which
  names the function); ``tests`` are the assert lines (after ``test_setup_code``). Splits as in the upstream
  README and the Hugging Face copy: task_ids 1-10 are few-shot exemplars (``prompt``), 11-510 eval, 511-600
  validation (unused), 601-974 train.

``reference`` is a whole correct program (HumanEval: prompt + canonical solution; MBPP: the reference code with
its line endings normalized).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from distill_ray.tasks.schema import make_problem

MBPP_SPLITS = {"prompt": range(1, 11), "eval": range(11, 511), "validation": range(511, 601),
               "train": range(601, 975)}


def _file(path: str | Path, name: str) -> Path:
    path = Path(path)
    file = path if path.is_file() else path / name
    if not file.is_file():
        raise ValueError(f"{name} not found at {path} (pass the directory that holds it, or the file)")
    return file


def read_humaneval(path: str | Path) -> list[dict]:
    """Every HumanEval problem as an eval problem, in file order."""
    problems = []
    for line in _file(path, "HumanEval.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        number = record["task_id"].split("/")[-1]
        problems.append(make_problem(
            task_id=f"humaneval/{number}", split="eval", source="humaneval", family="humaneval", difficulty=1,
            kind="asserts", question=record["prompt"], tests=record["test"], entry_point=record["entry_point"],
            reference=record["prompt"] + record["canonical_solution"]))
    return problems


def mbpp_entry_point(tests: list[str], code: str = "") -> str:
    """The function the asserts call: a function the reference ``code`` defines and the tests call (MBPP has
    solutions named ``sum`` or ``max``), else the first call that is not a builtin or a module attribute
    (``assert set(f(...)) == ...``, ``assert math.isclose(f(...), ...)`` -> ``f``)."""
    import builtins

    calls = [name for test in tests for name in re.findall(r"(?<![\w.])([A-Za-z_]\w*)\s*\(", test)]
    defined = re.findall(r"^def\s+([A-Za-z_]\w*)\s*\(", code, flags=re.MULTILINE)
    for name in calls:
        if name in defined:
            return name
    for name in calls:
        if not hasattr(builtins, name):
            return name
    raise ValueError(f"no function call found in {tests[:1]!r}")


def read_mbpp(path: str | Path, split: str) -> list[dict]:
    """MBPP problems of one split ("train", "eval", "validation" or "prompt"), in task_id order."""
    if split not in MBPP_SPLITS:
        raise ValueError(f"mbpp split must be one of {sorted(MBPP_SPLITS)}, got {split!r}")
    problems = []
    for line in _file(path, "mbpp.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["task_id"] not in MBPP_SPLITS[split]:
            continue
        tests = record["test_list"]
        setup = record.get("test_setup_code") or ""
        problems.append(make_problem(
            task_id=f"mbpp/{record['task_id']}", split="train" if split in ("train", "prompt") else "eval",
            source="mbpp", family="mbpp", difficulty=1, kind="asserts",
            question=f"{record['text']}\nYour code should pass this test:\n{tests[0]}",
            tests="\n".join(([setup] if setup else []) + tests), entry_point=mbpp_entry_point(tests, record["code"]),
            reference=record["code"].replace("\r\n", "\n").replace("\r", "\n")))
    return problems


def load_humaneval(path: str | Path, *, num_eval: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    problems = read_humaneval(path)
    random.Random(f"humaneval/{seed}").shuffle(problems)
    return [], problems[:num_eval]


def load_mbpp(path: str | Path, *, num_train: int, num_eval: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    result = []
    for split, count in (("train", num_train), ("eval", num_eval)):
        problems = read_mbpp(path, split)
        random.Random(f"mbpp/{split}/{seed}").shuffle(problems)
        result.append(problems[:count])
    return result[0], result[1]
