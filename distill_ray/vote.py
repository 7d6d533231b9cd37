"""Vote across the samples (and teachers) of one prompt.

Agreement (every answered sample gives the same answer) yields a hard label; disagreement yields a soft
label: each row carries the share of its answer among the prompt's answers, the distribution that
multi-teacher distillation trains on. Exact duplicate programs of a prompt are marked and not kept.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

VOTE_COLUMNS = ("vote_answer", "vote_share", "answer_share", "agreement", "duplicate", "keep")


def vote_group(group: pd.DataFrame, require_majority: bool = False) -> pd.DataFrame:
    """Vote over all candidates of one task; rows keep their order (teacher, sample_index)."""
    group = group.sort_values(["teacher", "sample_index"], kind="stable").reset_index(drop=True)
    answers = [a for a in group["answer"] if isinstance(a, str)]
    counts = Counter(answers)
    winner, top = counts.most_common(1)[0] if counts else (None, 0)
    total = len(answers)
    group["vote_answer"] = winner
    group["vote_share"] = top / total if total else 0.0
    group["answer_share"] = [counts[a] / total if isinstance(a, str) and total else 0.0 for a in group["answer"]]
    group["agreement"] = len(counts) == 1
    group["duplicate"] = group["program"].map(_normalize).duplicated()
    keep = group["passed"].astype(bool) & ~group["duplicate"]
    if require_majority:
        keep &= group["answer"] == winner
    group["keep"] = keep
    return group


def _normalize(program: str) -> str:
    """Whitespace-insensitive form, so reformatted copies count as duplicates."""
    return " ".join(program.split())
