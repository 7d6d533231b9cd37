"""Throughput of the vote where the stream runs it (the shard sink: each chunk's rows grouped by prompt, voted,
written as a Parquet shard) vs the same vote in a plain pandas loop that writes nothing.

    python benchmarks/vote_throughput.py [--tasks 2000] [--samples 8] [--quick]
"""

from __future__ import annotations

import argparse
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
                         "kind": "gsm8k", "expected": 0.0,
                         "teacher": np.where(rng.random(n) < 0.5, "a", "b"),
                         "sample_index": np.tile(np.arange(samples), tasks),
                         "answer": [str(a) for a in answers], "passed": answers == 0,
                         "program": [f"def sol():\n    return {a}" for a in answers]})


def plain_loop(rows: pd.DataFrame, stage) -> float:
    start = time.perf_counter()
    for _, group in rows.groupby("task_id", sort=False):
        vote_group(group.copy(), **stage.fn_kwargs)
    return len(rows) / (time.perf_counter() - start)


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


def measure(quick: bool = False, tasks: int | None = None, samples: int = 8) -> list[dict]:
    rows = candidates(tasks or (500 if quick else 4000), samples)
    stage = vote.build(VoteConfig(require_majority=False), [TeacherConfig()])
    sink(rows.head(samples * 20), stage)   # warm-up: code imported
    return [{"stage": "vote", "case": f"{len(rows) // samples} prompts x {samples} samples", "unit": "rows/s",
             "workers": None, "ours": sink(rows, stage), "baseline": plain_loop(rows, stage),
             "baseline_name": "pandas groupby loop, no write"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for row in measure(args.quick, None if args.quick else args.tasks, args.samples):
        print(f"{row['case']}: shard sink (vote + write) {row['ours']:.0f} {row['unit']} | {row['baseline_name']} "
              f"{row['baseline']:.0f} {row['unit']} | ratio {row['ours'] / row['baseline']:.2f}x")


if __name__ == "__main__":
    main()
