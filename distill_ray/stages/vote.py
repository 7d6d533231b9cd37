"""vote: across the samples and teachers of one prompt, after verification (a group-by-``task_id`` stage).

Each sample casts a vote key: for programs (gsm8k) the value they return, for puzzles (p3) whether they
verified (many different answers satisfy one ``sat``); a sample without an answer abstains.

- Self-consistency within a teacher: its samples grouped by key and counted (``teacher_counts``); its
  majority is the unique most common key (a tie is no majority).
- Across teachers: if every teacher that voted has a majority and they are all the same, the prompt is in
  the **agreement set** (hard label); otherwise in the **disagreement set**, whose soft label is the
  teacher-weighted distribution over keys: sum_t w_t * count_t(key) / votes_t, normalised by the weights.
  With a single teacher the samples are the voters: agreement means they are unanimous.
- Where the verifier can decide (a puzzle's ``sat``, a known expected number), verified correctness wins:
  a verified row is a hard label with weight 1, a refuted one is never kept, whatever the votes say.
  Where it cannot (unlabelled gsm8k: no expected number), votes decide: on agreement the rows with the
  agreed answer are hard labels (weight 1); on disagreement every answered row is kept with
  ``label_weight`` = its key's share of the soft label, the weight the ``soft`` training objective reads.
- A mix-up problem (``source`` "mixup", ``mixup.py``) is kept as above but always labelled soft: its kept rows
  share one unit of weight, each its program's teacher-weighted share of the samples that wrote a kept program
  (``soft_shares``), so what the teachers wrote more often weighs more and the problem weighs one row's worth.

Exact duplicate programs of a prompt are marked and not kept.
"""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pyarrow as pa

from distill_ray.config import TeacherConfig, VoteConfig
from distill_ray.mixup import SOURCE as MIXUP
from distill_ray.stages.base import GroupStage

READS = ("task_id", "teacher", "sample_index", "kind", "expected", "answer", "passed", "program", "source")
WRITES = {
    "vote_answer": pa.string(),         # the prompt's winning key (None: nobody voted)
    "vote_share": pa.float64(),         # the winner's share of the soft label
    "answer_share": pa.float64(),       # this row's key's share
    "agreement": pa.bool_(),            # agreement set (hard label) or disagreement set (soft label)
    "label_type": pa.string(),          # "hard" | "soft"
    "label_distribution": pa.string(),  # JSON: key -> share, the soft label
    "teacher_counts": pa.string(),      # JSON: teacher -> key -> votes
    "label_weight": pa.float64(),       # the weight the ``soft`` objective reads (0: not kept)
    "duplicate": pa.bool_(),            # the same program (whitespace aside) as an earlier row of the prompt
    "keep": pa.bool_(),                 # trained on
}


def build(vote: VoteConfig, teachers: list[TeacherConfig], critic: bool = False) -> GroupStage:
    """With ``critic``, the critic stage's verdict (``critic_accept``) decides for the rows no verifier can."""
    return GroupStage("vote", reads=READS + (("critic_accept",) if critic else ()), writes=WRITES, key="task_id",
                      fn=vote_group, groups_fn=vote_groups,
                      fn_kwargs=dict(require_majority=vote.require_majority,
                                     weights={t.name: t.weight for t in teachers}))


def vote_keys(rows: pd.DataFrame) -> list[str | None]:
    """Each row's vote key; a row the critic rejected (``critic_accept`` False) abstains where the verifier
    cannot decide (unlabelled gsm8k), so it neither votes nor is kept."""
    keys = [vote_key(kind, passed, answer) for kind, passed, answer in zip(rows["kind"], rows["passed"], rows["answer"])]
    if "critic_accept" not in rows:
        return keys
    return [None if not is_labelled(kind, expected) and not bool(accept) else key
            for key, kind, expected, accept in zip(keys, rows["kind"], rows["expected"], rows["critic_accept"])]


def vote_group(group: pd.DataFrame, require_majority: bool = False,
               weights: dict[str, float] | None = None) -> pd.DataFrame:
    """Vote over all candidates of one task; rows come out ordered by (teacher, sample_index)."""
    group = group.sort_values(["teacher", "sample_index"], kind="stable").reset_index(drop=True)
    keys = vote_keys(group)
    counts = {t: Counter(k for k, t_ in zip(keys, group["teacher"]) if t_ == t and k is not None)
              for t in dict.fromkeys(group["teacher"])}
    distribution = weighted_distribution(counts, weights or {})
    agreement, winner = decide(counts, keys)
    if winner is None and distribution:
        winner = max(sorted(distribution), key=distribution.get)  # ties: the smallest key, deterministically
    share = [distribution.get(k, 0.0) if k is not None else 0.0 for k in keys]

    group["vote_answer"] = winner
    group["vote_share"] = distribution.get(winner, 0.0) if winner is not None else 0.0
    group["answer_share"] = share
    group["agreement"] = agreement
    group["label_distribution"] = json.dumps(dict(sorted(distribution.items(), key=lambda kv: (-kv[1], kv[0]))))
    group["teacher_counts"] = json.dumps({t: dict(sorted(c.items())) for t, c in counts.items()})
    group["duplicate"] = group["program"].map(normalize_program).duplicated()
    labels = [_label(is_labelled(kind, expected), bool(passed), key, winner, agreement, s)
              for kind, expected, passed, key, s in zip(group["kind"], group["expected"], group["passed"], keys, share)]
    group["label_type"] = [label for label, _ in labels]
    weight = pd.Series([w for _, w in labels], dtype="float64")
    keep = (weight > 0) & ~group["duplicate"]
    if require_majority:
        keep &= pd.Series([k == winner for k in keys])
    group["label_weight"] = weight.where(keep, 0.0)
    group["keep"] = keep
    if any(is_mixup(group)):
        group["label_weight"] = soft_shares(group["teacher"].tolist(), group["program"].tolist(), keep.tolist(),
                                            weights or {})
        group["label_type"] = "soft"
    return group


def vote_groups(rows: pd.DataFrame, require_majority: bool = False,
                weights: dict[str, float] | None = None) -> pd.DataFrame:
    """``vote_group`` over every task of ``rows`` at once, row for row the same result (tested), for the shard
    sink: one sort and plain lists instead of a DataFrame per task (a DataFrame per 4-row task cost ~2.5 ms,
    the sink's whole budget at millions of rows). Rows come out ordered by (task_id, teacher, sample_index)."""
    rows = rows.sort_values(["task_id", "teacher", "sample_index"], kind="stable").reset_index(drop=True)
    tasks, teachers, programs = rows["task_id"].tolist(), rows["teacher"].tolist(), rows["program"].tolist()
    keys = vote_keys(rows)
    labelled = [is_labelled(kind, expected) for kind, expected in zip(rows["kind"], rows["expected"])]
    passed = [bool(p) for p in rows["passed"]]
    mixup = is_mixup(rows)
    out = {column: [] for column in WRITES}
    starts = [i for i in range(len(tasks)) if i == 0 or tasks[i] != tasks[i - 1]] + [len(tasks)]
    for start, end in zip(starts, starts[1:]):
        span = range(start, end)
        counts = {t: Counter() for t in dict.fromkeys(teachers[start:end])}
        for i in span:
            if keys[i] is not None:
                counts[teachers[i]][keys[i]] += 1
        distribution = weighted_distribution(counts, weights or {})
        agreement, winner = decide(counts, keys[start:end])
        if winner is None and distribution:
            winner = max(sorted(distribution), key=distribution.get)
        group = {"vote_answer": winner, "vote_share": distribution.get(winner, 0.0) if winner is not None else 0.0,
                 "agreement": agreement,
                 "label_distribution": json.dumps(dict(sorted(distribution.items(), key=lambda kv: (-kv[1], kv[0])))),
                 "teacher_counts": json.dumps({t: dict(sorted(c.items())) for t, c in counts.items()})}
        seen = set()
        for i in span:
            share = distribution.get(keys[i], 0.0) if keys[i] is not None else 0.0
            program = normalize_program(programs[i])
            duplicate = program in seen
            seen.add(program)
            label, weight = _label(labelled[i], passed[i], keys[i], winner, agreement, share)
            keep = weight > 0 and not duplicate and (not require_majority or keys[i] == winner)
            for column, value in group.items():
                out[column].append(value)
            out["answer_share"].append(share)
            out["duplicate"].append(duplicate)
            out["label_type"].append(label)
            out["label_weight"].append(weight if keep else 0.0)
            out["keep"].append(keep)
        if mixup[start]:
            out["label_weight"][start:end] = soft_shares(teachers[start:end], programs[start:end],
                                                         out["keep"][start:end], weights or {})
            out["label_type"][start:end] = ["soft"] * (end - start)
    return rows.assign(**out)


def vote_key(kind: str, passed, answer) -> str | None:
    """What a sample votes for: a puzzle's verdict, a program's returned value (None: abstains)."""
    if kind == "p3":
        return "verified" if bool(passed) else "not verified"
    return answer if isinstance(answer, str) else None


def is_mixup(rows: pd.DataFrame) -> list[bool]:
    """Which rows are of a mix-up problem (a frame without ``source``, as in unit tests, has none)."""
    return (rows["source"] == MIXUP).tolist() if "source" in rows else [False] * len(rows)


def soft_shares(teachers: list[str], programs: list[str], keep: list[bool], weights: dict[str, float]) -> list[float]:
    """A mix-up problem's soft label on its rows: a kept row's program's teacher-weighted share of the samples
    whose program is kept (duplicates count as votes for their program; they are not kept themselves), 0 for
    the rest; so the kept rows sum to 1, and summed by answer the shares are the teachers' answer distribution."""
    programs = [normalize_program(p) for p in programs]
    kept = {p for p, k in zip(programs, keep) if k}
    counts = {t: Counter() for t in dict.fromkeys(teachers)}
    for teacher, program in zip(teachers, programs):
        if program in kept:
            counts[teacher][program] += 1
    distribution = weighted_distribution(counts, weights)
    return [distribution[p] if k else 0.0 for p, k in zip(programs, keep)]


def is_labelled(kind: str, expected) -> bool:
    """Can the verifier decide this problem? Puzzles carry their check; gsm8k needs an expected number."""
    return kind != "gsm8k" or not pd.isna(expected)


def weighted_distribution(counts: dict[str, Counter], weights: dict[str, float]) -> dict[str, float]:
    """Each voting teacher's own distribution over keys, averaged with the teachers' weights (default 1)."""
    voting = {t: c for t, c in counts.items() if c}
    total_weight = sum(weights.get(t, 1.0) for t in voting)
    distribution: dict[str, float] = {}
    for teacher, c in voting.items():
        votes = sum(c.values())
        for key, n in c.items():
            distribution[key] = distribution.get(key, 0.0) + weights.get(teacher, 1.0) * n / votes / total_weight
    return distribution


def decide(counts: dict[str, Counter], keys: list[str | None]) -> tuple[bool, str | None]:
    """(agreement, the agreed key or None). One teacher: its samples must be unanimous. Several: every
    teacher that voted has a unique majority and all majorities are the same; silent teachers abstain."""
    if len(counts) == 1:
        cast = {k for k in keys if k is not None}
        return (True, cast.pop()) if len(cast) == 1 else (False, None)
    majorities = [_majority(c) for c in counts.values() if c]
    if majorities and None not in majorities and len(set(majorities)) == 1:
        return True, majorities[0]
    return False, None


def _majority(c: Counter) -> str | None:
    top = c.most_common(2)
    return None if len(top) == 2 and top[0][1] == top[1][1] else top[0][0]


def _label(labelled: bool, passed: bool, key, winner, agreement: bool, share: float) -> tuple[str, float]:
    """(label type, weight before dedup): the verifier's verdict where it has one, else the vote."""
    if labelled:
        return "hard", 1.0 if passed else 0.0
    if agreement:
        return "hard", 1.0 if key is not None and key == winner else 0.0
    return "soft", share if key is not None else 0.0


def normalize_program(program: str) -> str:
    """Whitespace-insensitive form, so reformatted copies count as duplicates."""
    return " ".join(program.split())
