"""``load_problems``: one entry point for every task source, returning (train, eval) problem dicts."""

from __future__ import annotations

import logging

from distill_ray.tasks.functions import load_humaneval, load_mbpp
from distill_ray.tasks.gsm8k import gsm8k_file, load_gsm8k
from distill_ray.tasks.jsonl import MAX_QUESTION_CHARS, load_jsonl
from distill_ray.tasks.p3 import load_p3
from distill_ray.tasks.puzzles import load_puzzles

log = logging.getLogger(__name__)

SOURCES = ("puzzles", "gsm8k", "p3", "humaneval", "mbpp", "jsonl")


def load_problems(source: str, *, num_train: int, num_eval: int, seed: int = 0, path: str | None = None,
                  difficulty: int = 1, families: list[str] | None = None,
                  max_question_chars: int = MAX_QUESTION_CHARS,
                  quarantine: list[dict] | None = None) -> tuple[list[dict], list[dict]]:
    """(train, eval) problem dicts, deterministic given the arguments, with disjoint task_ids.

    source: "puzzles" (procedural, built in; ``difficulty`` 1-3 and ``families`` apply), "gsm8k" (``path`` =
    directory with train.jsonl/test.jsonl), "p3" (``path`` = directory with puzzles.json/split.json;
    ``families`` filters P3 family names), "humaneval" / "mbpp" (``path`` = the directory holding
    HumanEval.jsonl / mbpp.jsonl; HumanEval has eval problems only) or "jsonl" (``path`` = a file of your own
    problems, see jsonl.py).
    Real sources return fewer rows than asked when the data runs out. Malformed GSM8K and JSONL lines are
    skipped, logged, and appended to ``quarantine`` (with line number and reason) when a list is passed.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown task source {source!r}; expected one of {SOURCES}")
    if num_train < 0 or num_eval < 0:
        raise ValueError(f"num_train and num_eval must be >= 0, got {num_train} and {num_eval}")
    if source == "puzzles":
        return load_puzzles(num_train=num_train, num_eval=num_eval, seed=seed, difficulty=difficulty,
                            families=families)
    if path is None:
        raise ValueError(f"task source {source!r} needs path= (the directory holding its files)")
    if source == "p3":
        return load_p3(path, num_train=num_train, num_eval=num_eval, seed=seed, families=families)
    if source in ("humaneval", "mbpp") and families is not None:
        raise ValueError(f"{source} has no families; pass families=None")
    if source == "humaneval":
        return load_humaneval(path, num_eval=num_eval, seed=seed)
    if source == "mbpp":
        return load_mbpp(path, num_train=num_train, num_eval=num_eval, seed=seed)
    if source == "jsonl":
        bad: list[dict] = []
        train, eval_ = load_jsonl(path, num_train=num_train, num_eval=num_eval, seed=seed,
                                  max_question_chars=max_question_chars, quarantine=bad)
        if bad:
            log.warning("%s: quarantined %d malformed lines (first: line %d, %s)",
                        path, len(bad), bad[0]["line"], bad[0]["reason"])
        if quarantine is not None:
            quarantine.extend({"file": str(path), **q} for q in bad)
        return train, eval_
    if families is not None:
        raise ValueError("gsm8k has no families; pass families=None")
    return _load_gsm8k_splits(path, num_train, num_eval, seed, quarantine)


def _load_gsm8k_splits(path: str, num_train: int, num_eval: int, seed: int,
                       quarantine: list[dict] | None) -> tuple[list[dict], list[dict]]:
    import random

    result = []
    train_questions: set[str] = set()
    for split, count in (("train", num_train), ("test", num_eval)):
        problems, bad = load_gsm8k(path, split)
        if bad:
            log.warning("gsm8k %s: quarantined %d malformed lines (first: line %d, %s)",
                        split, len(bad), bad[0]["line"], bad[0]["reason"])
            if quarantine is not None:
                quarantine.extend({"file": str(gsm8k_file(path, split)), "split": split, **q} for q in bad)
        if split == "train":
            train_questions = {p["question"] for p in problems}
        else:   # keep eval free of any question also in train
            problems = [p for p in problems if p["question"] not in train_questions]
        random.Random(f"gsm8k/{split}/{seed}").shuffle(problems)
        result.append(problems[:count])
    return result[0], result[1]
