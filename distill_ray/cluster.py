"""Joining a Ray cluster: the one place every job (distillation, puzzles, experiment) connects."""

from __future__ import annotations

import os
import sys
import tempfile


def connect_ray(address: str | None = None, num_cpus: int | None = None, progress_bars: bool | None = None):
    """Join ``address`` (or ``RAY_ADDRESS``) if given, else start a local cluster of ``num_cpus`` CPUs in a
    fresh temp dir (another cluster on the machine is never joined by accident). Ray Data's progress bars
    follow ``progress_bars``; by default ``DISTILL_RAY_PROGRESS`` (1 or 0), else on only on a terminal: in a log
    file they are a line per operator every few seconds, and our own lines say what each step did."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     _temp_dir=tempfile.mkdtemp(prefix="distill-ray-"))
    if progress_bars is None:
        default = "1" if sys.stderr.isatty() else "0"
        progress_bars = os.environ.get("DISTILL_RAY_PROGRESS", default) == "1"
    ray.data.DataContext.get_current().enable_progress_bars = progress_bars
    return ray
