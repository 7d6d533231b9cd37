"""Live metrics: every stage exports counters through Ray's metrics API while a job runs.

The Ray dashboard and any Prometheus scrape of a node's metrics port show them (Prometheus names carry Ray's
``ray_`` prefix, counters a ``_total`` suffix), tagged with the stage name:

| metric | kind | meaning |
| --- | --- | --- |
| `distill_ray_rows_in` | counter | rows entering the stage |
| `distill_ray_rows_out` | counter | rows leaving it (a teacher writes n candidate rows per prompt row) |
| `distill_ray_batches` | counter | batches processed |
| `distill_ray_busy_seconds` | counter | seconds spent inside the stage's function (rows_out / busy_seconds = rate) |
| `distill_ray_tokens_generated` | counter | completion tokens written (stages that write `completion_tokens`) |
| `distill_ray_verdicts` | counter | verdicts by `status` (stages that write `status`) |
| `distill_ray_in_flight_batches` | gauge | batches inside the stage's function now, per process (queue depth) |
| `distill_ray_train_loss`, `distill_ray_train_tokens_per_s` | gauge | training progress (see `train/`) |

Rates (checks/s, tokens/s) are what Prometheus' ``rate()`` makes of the counters. Metrics are created lazily in
the process that records them (Ray's metric objects are per process).
"""

from __future__ import annotations

import time
from functools import lru_cache

PREFIX = "distill_ray_"


@lru_cache(maxsize=None)
def _counter(name: str, description: str, tag_keys: tuple[str, ...]):
    from ray.util.metrics import Counter

    return Counter(PREFIX + name, description=description, tag_keys=tag_keys)


@lru_cache(maxsize=None)
def _gauge(name: str, description: str, tag_keys: tuple[str, ...]):
    from ray.util.metrics import Gauge

    return Gauge(PREFIX + name, description=description, tag_keys=tag_keys)


def count(name: str, value: float, description: str, **tags: str) -> None:
    if value:
        _counter(name, description, tuple(sorted(tags))).inc(value, tags=tags)


def gauge(name: str, value: float, description: str, **tags: str) -> None:
    _gauge(name, description, tuple(sorted(tags))).set(value, tags=tags)


class StageMeter:
    """Measures one stage's batches in one process: ``out = meter.call(fn, batch)``."""

    def __init__(self, stage: str):
        self.stage = stage
        self.in_flight = 0

    def record(self, rows_in: int, out, seconds: float) -> None:
        tags = {"stage": self.stage}
        count("rows_in", rows_in, "rows entering the stage", **tags)
        count("rows_out", len(out), "rows leaving the stage", **tags)
        count("batches", 1, "batches processed", **tags)
        count("busy_seconds", seconds, "seconds inside the stage's function", **tags)
        columns = getattr(out, "columns", ())
        if "completion_tokens" in columns:
            count("tokens_generated", float(out["completion_tokens"].sum()), "completion tokens written", **tags)
        if "status" in columns:
            for status, n in out["status"].value_counts().items():
                count("verdicts", float(n), "verdicts by status", status=str(status), **tags)

    def call(self, fn, batch, *args, **kwargs):
        """``fn(batch, ...)``, measured."""
        rows_in = len(batch)
        self.in_flight += 1
        gauge("in_flight_batches", self.in_flight, "batches inside the stage now (this process)", stage=self.stage)
        start = time.perf_counter()
        try:
            out = fn(batch, *args, **kwargs)
        finally:
            self.in_flight -= 1
            gauge("in_flight_batches", self.in_flight, "batches inside the stage now (this process)",
                  stage=self.stage)
        self.record(rows_in, out, time.perf_counter() - start)
        return out
