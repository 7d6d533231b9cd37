"""Stages export live metrics through Ray's metrics API: read them from the node's Prometheus endpoint while a
job runs."""

from __future__ import annotations

import re
import time
import urllib.request

import pandas as pd
import pyarrow as pa
import pytest

from distill_ray.stages import ActorStage, BatchStage, apply_stages

pytestmark = pytest.mark.slow


def double(batch: pd.DataFrame) -> pd.DataFrame:
    batch["y"] = batch["x"] * 2
    return batch


class Judge:
    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        batch["status"] = ["pass" if x % 3 else "fail" for x in batch["x"]]
        batch["completion_tokens"] = 5
        return batch


def scrape(port: int) -> dict[tuple[str, str], float]:
    """{(metric name, labels): value} of the distill_ray series."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    series = {}
    for line in text.splitlines():
        match = re.match(r"(ray_distill_ray_\w+)\{([^}]*)\} ([0-9.e+-]+)$", line)
        if match:
            series[(match.group(1), match.group(2))] = float(match.group(3))
    return series


def total(series: dict, name: str, **labels: str) -> float:
    return sum(v for (n, l), v in series.items()
               if n == name and all(f'{k}="{v_}"' in l for k, v_ in labels.items()))


def test_every_stage_exports_rows_batches_tokens_and_verdicts(ray_cluster):
    import sys

    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # workers cannot import this test module
    stages = [BatchStage("double", reads=("x",), writes={"y": pa.int64()}, fn=double, batch_size=10),
              ActorStage("judge", reads=("x",), writes={"status": pa.string(), "completion_tokens": pa.int64()}, cls=Judge,
                         cpus_per_actor=0.5, batch_size=10)]
    rows = apply_stages(ray.data.from_items([{"x": i} for i in range(60)]), ["x"], stages).to_pandas()
    assert len(rows) == 60

    port = ray._private.worker.global_worker.node.metrics_export_port
    expected = {("rows_in", "double", ""): 60, ("rows_out", "judge", ""): 60, ("batches", "judge", ""): 6,
                ("tokens_generated", "judge", ""): 300, ("verdicts", "judge", "pass"): 40,
                ("verdicts", "judge", "fail"): 20}

    def observed(series):
        return {(name, stage, status): total(series, f"ray_distill_ray_{name}_total", stage=stage,
                                             **({"status": status} if status else {}))
                for name, stage, status in expected}

    deadline, seen = time.monotonic() + 60, {}
    while time.monotonic() < deadline:   # each process's metrics agent exports every few seconds
        seen = observed(scrape(port))
        if seen == expected:
            break
        time.sleep(2)
    assert seen == expected
