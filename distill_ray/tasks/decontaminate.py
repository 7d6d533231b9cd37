"""Decontamination: no train problem or few-shot exemplar is an evaluation problem, exactly or nearly.

A problem's text is its question (or, for a puzzle, its ``sat``), lower-cased, its words only. Two checks:

- exact: the same words in the same order as an evaluation problem's (whitespace, case and punctuation aside);
- near-duplicate: a MinHash (datasketch) of its word 3-grams whose estimated Jaccard similarity with an
  evaluation problem's is at least ``threshold`` (found through datasketch's LSH index over the evaluation
  problems, then confirmed on the two MinHashes).

The procedural puzzles are not checked: their eval split never repeats a train ``sat`` (tasks/puzzles.py), one
family's puzzles share their template and differ in constants (so 3-gram similarity says nothing about leakage),
and hashing millions of them would cost the driver minutes. A contaminated problem is dropped and quarantined with
the evaluation problem it matches.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Iterator

from datasketch import MinHash, MinHashLSH

WORD = re.compile(r"\w+")
NUM_PERM = 64
SHINGLE = 3


def problem_text(problem: dict) -> str:
    return problem.get("question") or problem.get("sat") or ""


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def exact_key(text: str) -> bytes:
    return hashlib.blake2b(" ".join(words(text)).encode(), digest_size=12).digest()


def minhash(text: str) -> MinHash:
    w = words(text)
    shingles = {" ".join(w[i:i + SHINGLE]).encode() for i in range(max(1, len(w) - SHINGLE + 1))}
    m = MinHash(num_perm=NUM_PERM)
    m.update_batch(list(shingles))
    return m


class EvalIndex:
    """The evaluation problems, indexed for ``match``."""

    def __init__(self, eval_problems: Iterable[dict], threshold: float | None):
        """``threshold`` None: the exact check only."""
        self.threshold = threshold
        self.exact: dict[bytes, str] = {}
        self.hashes: dict[str, MinHash] = {}
        self.lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM) if threshold is not None else None
        for p in eval_problems:
            self.add(p)

    def add(self, problem: dict) -> None:
        """Index one more problem (GAL's dedupe grows an index of the inputs kept so far)."""
        text = problem_text(problem)
        self.exact.setdefault(exact_key(text), problem["task_id"])
        if self.lsh is not None and problem["task_id"] not in self.hashes:
            self.hashes[problem["task_id"]] = m = minhash(text)
            self.lsh.insert(problem["task_id"], m)

    def __len__(self) -> int:
        return len(self.exact)

    def nearest(self, problem: dict) -> tuple[str, str, float] | None:
        """("exact" or "near", the indexed problem's task_id, estimated Jaccard) for the problem ``problem``
        copies, or None."""
        text = problem_text(problem)
        same = self.exact.get(exact_key(text))
        if same is not None:
            return "exact", same, 1.0
        if self.lsh is None:
            return None
        m = minhash(text)
        similar = [(self.hashes[k].jaccard(m), k) for k in self.lsh.query(m)]
        best = max((s for s in similar if s[0] >= self.threshold), default=None)
        return ("near", best[1], best[0]) if best else None

    def match(self, problem: dict) -> str | None:
        """Why ``problem`` is contaminated, or None."""
        found = self.nearest(problem)
        if found is None:
            return None
        how, other, jaccard = found
        if how == "exact":
            return f"contaminated: the same text as evaluation problem {other}"
        return f"contaminated: near-duplicate (Jaccard ~{jaccard:.2f}) of evaluation problem {other}"


def decontaminate(problems: Iterable[dict], index: EvalIndex | None, quarantine: list[dict]) -> Iterator[dict]:
    """The problems that match no evaluation problem; each one that does is appended to ``quarantine``."""
    for p in problems:
        why = index.match(p) if index is not None else None
        if why is None:
            yield p
        else:
            quarantine.append({"task_id": p["task_id"], "split": p.get("split", "train"), "reason": why})


def contaminated_count(records: Iterable[dict]) -> int:
    return sum(1 for r in records if str(r.get("reason", "")).startswith("contaminated:"))
