"""LM mix-up with soft labels (GPT3Mix): a teacher writes a new train problem that blends two real ones, and the
problem's label is the teachers' distribution over its answers, not one answer.

    real train problems -> pair prompts -> [teachers] -> mixup_inputs (parse) -> filter -> + real train problems
                                                                                             -> prompt -> ... -> vote

A pair prompt is a GAL writer prompt (``gal.py``) that shows two different real train problems of one family
(families take turns) and asks for one problem blending them. Everything after the prompt is GAL's: the same
parsing, the same dedupe against real and earlier kept problems, the same decontamination against the
evaluation problems, the audit (``<output>/mixup_inputs.jsonl``) and the manifest's counts (``stats.mixup``).
Only the label differs: the vote gives a mix-up problem's kept rows one unit of soft label between them
(``stages/vote.py``, ``soft_shares``), each program its teacher-weighted share of the samples that wrote a kept
program, so the teachers' distribution over answers is what the ``soft`` objective learns (a GAL problem's
verified rows are hard labels, weight 1 each).
"""

from __future__ import annotations

import random

import pandas as pd

from distill_ray.gal import families, problem_text, writer_row

SOURCE = "mixup"
ASK = "Write a new problem that blends the two problems before into one."


def pair_prompts(train: list[dict], pairs: int, seed: int) -> pd.DataFrame:
    """One row per pair prompt (``gal.writer_row``'s columns, ``task_id`` ``mixup/p<i>``): two real train problems
    of one family with different texts, never one problem twice; families with fewer than two take no turn."""
    by_family = {f: distinct(pool) for f, pool in families(train, SOURCE).items()}
    names = sorted(f for f, pool in by_family.items() if len(pool) >= 2)
    if not names:
        raise ValueError("mixup: no family has two different real train problems to blend")
    rows = []
    for i in range(pairs):
        pool = by_family[names[i % len(names)]]
        rows.append(writer_row(f"mixup/p{i}", random.Random(f"mixup/{seed}/{i}").sample(pool, 2), ASK))
    return pd.DataFrame(rows)


def distinct(pool: list[dict]) -> list[dict]:
    """The first problem of each text: two copies of one problem are not a pair to blend."""
    first: dict[str, dict] = {}
    for p in pool:
        first.setdefault(problem_text(p), p)
    return list(first.values())
