"""Throughput of the vote where the stream runs it (the shard sink: each chunk's rows grouped by prompt, voted,
written as a Parquet shard) vs the same vote in plain pandas that writes nothing, two ways:

- a per-problem loop: ``groupby("task_id")`` and ``vote_group`` on each group's DataFrame;
- vectorised: the same vote as whole-frame pandas operations (grouped counts, transforms, merges; only the two
  JSON columns built per task), checked to give the same rows as ``vote.vote_groups``.

Above ``--loop-problems`` problems the per-problem loop is timed on a random sample of that many problems (it
is linear in the problems; at 10^6 rows all of them take minutes), and the output says so.

    python benchmarks/vote_throughput.py [--rows 4000 1000000] [--samples 8] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill_ray.config import TeacherConfig, VoteConfig  # noqa: E402
from distill_ray.resumable import CHUNK, CHUNK_PROBLEMS, ShardSink  # noqa: E402
from distill_ray.stages import check_flow, vote  # noqa: E402
from distill_ray.stages.vote import vote_group  # noqa: E402


def candidates(tasks: int, samples: int, seed: int = 0) -> pd.DataFrame:
    """Verified-candidate rows as the verify stage writes them: GSM8K-style, a few distinct answers per task, the
    expected one verified."""
    rng = np.random.default_rng(seed)
    n = tasks * samples
    answers = rng.integers(0, 3, n)
    return pd.DataFrame({"task_id": np.repeat([f"t{i}" for i in range(tasks)], samples),
                         "kind": "gsm8k", "source": "gsm8k", "expected": 0.0,
                         "teacher": np.where(rng.random(n) < 0.5, "a", "b"),
                         "sample_index": np.tile(np.arange(samples), tasks),
                         "answer": [str(a) for a in answers], "passed": answers == 0,
                         "program": [f"def sol():\n    return {a}" for a in answers]})


def plain_loop(rows: pd.DataFrame, stage, problems: int | None = None, seed: int = 0) -> tuple[float, int]:
    """(rows/s, problems timed): the per-problem loop, on a random sample of ``problems`` problems if given."""
    tasks = rows["task_id"].unique()
    if problems and problems < len(tasks):
        picked = np.random.default_rng(seed).choice(tasks, problems, replace=False)
        rows = rows[rows["task_id"].isin(set(picked))]
    start = time.perf_counter()
    for _, group in rows.groupby("task_id", sort=False):
        vote_group(group.copy(), **stage.fn_kwargs)
    return len(rows) / (time.perf_counter() - start), rows["task_id"].nunique()


def vectorised_vote(rows: pd.DataFrame, require_majority: bool = False,
                    weights: dict[str, float] | None = None) -> pd.DataFrame:
    """The vote of ``vote.vote_groups`` (no critic column) written as whole-frame pandas operations: grouped
    counts, transforms and merges; only the two JSON columns are built in Python, once per task. The same rows
    out (checked in ``measure`` and in tests/test_bench.py)."""
    weights = weights or {}
    rows = rows.sort_values(["task_id", "teacher", "sample_index"], kind="stable").reset_index(drop=True)
    p3 = (rows["kind"] == "p3").to_numpy()
    passed = rows["passed"].astype(bool).to_numpy()
    answered = rows["answer"].map(lambda a: isinstance(a, str)).to_numpy(dtype=bool)
    key = pd.Series(np.where(p3, np.where(passed, "verified", "not verified"),
                             np.where(answered, rows["answer"], None)), dtype=object)
    key = key.where(p3 | answered, None)
    task, teacher = rows["task_id"], rows["teacher"]

    votes = pd.DataFrame({"task_id": task, "teacher": teacher, "key": key})[key.notna().to_numpy()]
    counts = votes.groupby(["task_id", "teacher", "key"], sort=False).size().rename("n").reset_index()
    counts["votes"] = counts.groupby(["task_id", "teacher"], sort=False)["n"].transform("sum")
    counts["w"] = counts["teacher"].map(weights).fillna(1.0)
    voting = counts.drop_duplicates(["task_id", "teacher"])
    counts["total_w"] = counts["task_id"].map(voting.groupby("task_id", sort=False)["w"].sum())
    counts["part"] = counts["w"] * counts["n"] / counts["votes"] / counts["total_w"]
    # Summed teacher by teacher, in vote_group's order (a grouped sum compensates: other last bits).
    wide = counts.pivot(index=["task_id", "key"], columns="teacher", values="part")
    share = pd.Series(0.0, index=wide.index)
    for name in sorted(wide.columns):
        share = share + wide[name].fillna(0.0)
    dist = share.rename("share").reset_index()

    # Each voting teacher's unique majority (a tie: none); agreement as vote.decide.
    ranked = counts.sort_values(["task_id", "teacher", "n"], ascending=[True, True, False], kind="stable")
    rank = ranked.groupby(["task_id", "teacher"], sort=False).cumcount().to_numpy()
    first = ranked[rank == 0]
    runner_up = ranked[rank == 1][["task_id", "teacher", "n"]].rename(columns={"n": "n2"})
    first = first.merge(runner_up, on=["task_id", "teacher"], how="left")
    majority = first["key"].where(first["n"] != first["n2"], None)
    per_task = pd.DataFrame({"task_id": first["task_id"].to_numpy(), "majority": majority.to_numpy()})
    has_none = per_task["majority"].isna().groupby(per_task["task_id"], sort=False).any()
    distinct = per_task.groupby("task_id", sort=False)["majority"].nunique()
    several = (~has_none) & (distinct == 1)
    teachers_in_task = rows.groupby("task_id", sort=False)["teacher"].nunique()
    cast = counts.groupby("task_id", sort=False)["key"].nunique()
    one_teacher = teachers_in_task == 1
    agreement = pd.Series(np.where(one_teacher, cast.reindex(teachers_in_task.index).fillna(0) == 1,
                                   several.reindex(teachers_in_task.index).fillna(False)),
                          index=teachers_in_task.index, dtype=bool)
    agreed = per_task.drop_duplicates("task_id").set_index("task_id")["majority"]
    agreed_one = counts.drop_duplicates("task_id").set_index("task_id")["key"]
    ordered = dist.sort_values(["task_id", "share", "key"], ascending=[True, False, True], kind="stable")
    top = ordered.drop_duplicates("task_id").set_index("task_id")["key"]
    winner = pd.Series(np.where(agreement, np.where(one_teacher, agreed_one.reindex(agreement.index),
                                                     agreed.reindex(agreement.index)),
                                top.reindex(agreement.index)), index=agreement.index, dtype=object)
    winner = winner.where(winner.notna(), None)
    share_of = dist.set_index(["task_id", "key"])["share"]

    # The JSON columns: one dict per task, in vote_group's key order, from flat lists (no DataFrame per task).
    label_distribution = {t: json.dumps({k: v for _, k, v in entries}) for t, entries in itertools.groupby(
        zip(ordered["task_id"].tolist(), ordered["key"].tolist(), ordered["share"].tolist()), key=lambda e: e[0])}
    keyed = counts.sort_values(["task_id", "teacher", "key"], kind="stable")
    per_teacher = {pair: {k: n for _, _, k, n in entries} for pair, entries in itertools.groupby(
        zip(keyed["task_id"].tolist(), keyed["teacher"].tolist(), keyed["key"].tolist(), keyed["n"].tolist()),
        key=lambda e: e[:2])}
    pairs = rows[["task_id", "teacher"]].drop_duplicates()
    teacher_counts = {t: json.dumps({tc: per_teacher.get((t, tc), {}) for _, tc in entries})
                      for t, entries in itertools.groupby(zip(pairs["task_id"].tolist(), pairs["teacher"].tolist()),
                                                          key=lambda e: e[0])}

    row_winner = task.map(winner)
    row_agreement = task.map(agreement).to_numpy(dtype=bool)
    share = pd.MultiIndex.from_arrays([task, key]).map(share_of).to_numpy(dtype=float)
    share = np.where(key.notna(), np.nan_to_num(share), 0.0)
    labelled = ((rows["kind"] != "gsm8k") | rows["expected"].notna()).to_numpy()
    is_winner = (key == row_winner).to_numpy() & key.notna().to_numpy()
    weight = np.where(labelled, passed.astype(float),
                      np.where(row_agreement, is_winner.astype(float), np.where(key.notna(), share, 0.0)))
    duplicate = pd.DataFrame({"t": task, "p": rows["program"].str.split().str.join(" ")}).duplicated().to_numpy()
    keep = (weight > 0) & ~duplicate
    if require_majority:
        keep &= is_winner | (key.isna() & row_winner.isna()).to_numpy()   # None == None, as in vote_group
    vote_share = pd.MultiIndex.from_arrays([task, row_winner]).map(share_of).to_numpy(dtype=float)
    return rows.assign(
        vote_answer=row_winner.where(row_winner.notna(), None), vote_share=np.nan_to_num(vote_share),
        answer_share=share, agreement=row_agreement, label_distribution=task.map(label_distribution).fillna("{}"),
        teacher_counts=task.map(teacher_counts),
        duplicate=duplicate, label_type=np.where(labelled | row_agreement, "hard", "soft"),
        label_weight=np.where(keep, weight, 0.0), keep=keep)


def vectorised(rows: pd.DataFrame, stage, check: bool = True) -> float:
    """rows/s of ``vectorised_vote``; ``check``: its rows equal ``vote.vote_groups``' (untimed)."""
    start = time.perf_counter()
    out = vectorised_vote(rows, **stage.fn_kwargs)
    seconds = time.perf_counter() - start
    if check:
        expected = vote.vote_groups(rows, **stage.fn_kwargs)
        for column in vote.WRITES:
            assert out[column].tolist() == expected[column].tolist(), f"vectorised vote differs in {column}"
    return len(rows) / seconds


def sink(rows: pd.DataFrame, stage, chunk_rows: int = 4096) -> float:
    """The sink as the stream feeds it: one batch per chunk (whole prompts), each voted and written."""
    import tempfile

    samples = int(rows.groupby("task_id").size().iat[0])
    chunks = np.arange(len(rows)) // chunk_rows   # whole prompts per chunk: chunk_rows is a multiple of samples
    columns = list(rows.columns)
    rows = rows.assign(**{CHUNK: chunks, CHUNK_PROBLEMS: pd.Series(chunks).map(
        pd.Series(chunks).value_counts() // samples).to_numpy()})
    with tempfile.TemporaryDirectory() as out:
        shard_sink = ShardSink(out, check_flow(columns, [stage]), stage, fanout=samples)
        start = time.perf_counter()
        written = sum(int(shard_sink(batch)["shards_written"].sum()) for _, batch in rows.groupby(CHUNK))
        seconds = time.perf_counter() - start
    assert written == chunks.max() + 1
    return len(rows) / seconds


LOOP_PROBLEMS = 20_000   # above this many problems the per-problem loop is timed on a sample of them


def measure(quick: bool = False, rows: list[int] | None = None, samples: int = 8,
            loop_problems: int = LOOP_PROBLEMS) -> list[dict]:
    """One repetition: for each size, the sink against the per-problem loop and against the vectorised vote.
    `distill-ray bench`: 4,000 rows (--quick), 4,000 and 10^6 rows (full)."""
    rows = rows or ([4000] if quick else [4000, 1_000_000])
    stage = vote.build(VoteConfig(require_majority=False), [TeacherConfig()])
    sink(candidates(20, samples), stage)   # warm-up: code imported
    out = []
    for count in rows:
        tasks = max(1, count // samples)
        frame = candidates(tasks, samples)
        ours = sink(frame, stage)
        start = time.perf_counter()   # the sink's vote alone, chunk by chunk, no Parquet write (printed only)
        for _, chunk in frame.groupby(np.arange(len(frame)) // 4096):
            vote.vote_groups(chunk, **stage.fn_kwargs)
        vote_only = len(frame) / (time.perf_counter() - start)
        loop, timed = plain_loop(frame, stage, loop_problems)
        vector = vectorised(frame, stage)
        case = f"{tasks:,} prompts x {samples} samples ({len(frame):,} rows)"
        sampled = f", timed on {timed:,} of {tasks:,} problems" if timed < tasks else ""
        out += [{"stage": "vote", "case": f"{case}, vs per-problem loop", "unit": "rows/s", "workers": None,
                 "ours": ours, "baseline": loop, "baseline_name": f"pandas groupby + vote_group per problem, no "
                                                                   f"write{sampled}"},
                {"stage": "vote", "case": f"{case}, vs vectorised", "unit": "rows/s", "workers": None,
                 "ours": ours, "baseline": vector, "baseline_name": "vectorised pandas vote, no write",
                 "vote_only": vote_only}]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--rows", type=int, nargs="+", help="candidate rows (tasks = rows / samples); default "
                      "4,000 and 10^6 (--quick: 4,000)")
    size.add_argument("--tasks", type=int, nargs="+", help="problems instead of rows")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--loop-problems", type=int, default=LOOP_PROBLEMS,
                        help="time the per-problem loop on a random sample of this many problems at most")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = args.rows or ([t * args.samples for t in args.tasks] if args.tasks else None)
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    for row in measure(args.quick, rows, args.samples, args.loop_problems):
        print(f"{row['case']}: shard sink (vote + write) {row['ours']:,.0f} {row['unit']} | {row['baseline_name']} "
              f"{row['baseline']:,.0f} {row['unit']} | ratio {row['ours'] / row['baseline']:.2f}x", flush=True)
        if "vote_only" in row:
            print(f"  the sink's vote alone (vote_groups per 4,096-row chunk, no write): {row['vote_only']:,.0f} "
                  f"{row['unit']} = {row['vote_only'] / row['baseline']:.2f}x the vectorised vote", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
