"""Throughput of the vote stage (Ray Data group-by + vote_group) vs the same vote in a plain pandas loop.

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
from distill_ray.stages import apply_stages  # noqa: E402
from distill_ray.stages import vote  # noqa: E402
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


def pipeline(rows: pd.DataFrame, stage) -> float:
    import ray

    ds = ray.data.from_pandas(rows)
    start = time.perf_counter()
    out = apply_stages(ds, list(rows.columns), [stage]).materialize()
    assert out.count() == len(rows)
    return len(rows) / (time.perf_counter() - start)


def measure(quick: bool = False, tasks: int | None = None, samples: int = 8) -> list[dict]:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = candidates(tasks or (500 if quick else 4000), samples)
    stage = vote.build(VoteConfig(require_majority=False, partitions=2), [TeacherConfig()])
    pipeline(rows.head(samples * 20), stage)   # warm-up: workers started, code imported
    return [{"stage": "vote", "case": f"{len(rows) // samples} prompts x {samples} samples", "unit": "rows/s",
             "workers": None, "ours": pipeline(rows, stage), "baseline": plain_loop(rows, stage),
             "baseline_name": "pandas groupby loop, 1 process"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for row in measure(args.quick, None if args.quick else args.tasks, args.samples):
        print(f"{row['case']}: Ray Data vote stage {row['ours']:.0f} {row['unit']} | {row['baseline_name']} "
              f"{row['baseline']:.0f} {row['unit']} | ratio {row['ours'] / row['baseline']:.2f}x")


if __name__ == "__main__":
    main()
