"""Graceful stop: SIGTERM (what ``ray job stop`` and most schedulers send before they kill) or SIGINT ends a job
at once and cleanly, instead of killing the driver wherever it is.

The signal raises ``Stopped`` in the driver's main thread, which is waiting for the stream's next batch; leaving
that loop shuts Ray Data's execution down (its actor pools are killed), so the chunks in flight are abandoned.
A shard is only ever renamed into place complete (``shards.py``), so nothing half-written is left as data; the
job removes the temporary files of abandoned shards, records ``status: stopped`` with the shards done in its
manifest, and exits with 128 + the signal's number. A rerun with the same output skips every finished shard.
``ray job stop`` waits ``RAY_JOB_STOP_WAIT_TIME_S`` (3 s by default) before SIGKILL: a stop takes about a
second, and a SIGKILL is safe too (the next run removes the temporary files instead).
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager

from distill_ray.shards import Manifest

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """The job was asked to stop by ``signum``."""

    def __init__(self, signum: int):
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_active = False   # inside ``stop_on_signals``


def _raise_stopped(signum, frame):
    raise Stopped(signum)


@contextmanager
def stop_on_signals():
    """Within the block, SIGTERM and SIGINT raise ``Stopped`` (in the main thread only: Python delivers signals
    there; elsewhere the block runs unchanged). ``ray.init`` installs its own SIGTERM handler (an exit wherever
    the driver is): ``connect_ray`` calls ``keep_after_ray_init`` to put this one back."""
    global _active
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_stopped) for s in SIGNALS}
    _active = True
    try:
        yield
    finally:
        _active = False
        for s, handler in previous.items():
            signal.signal(s, handler)


def keep_after_ray_init() -> None:
    """Re-install the stop handlers that ``ray.init`` replaced, inside ``stop_on_signals``."""
    if _active and threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _raise_stopped)


def record_stop(manifest: Manifest, stop: Stopped, shards_done: int, shards_total: int) -> None:
    """Say in the manifest that the run stopped, and how far it got (a completed rerun sets status again)."""
    manifest.update(status="stopped", stopped={"signal": stop.name, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                               "shards_done": shards_done, "shards_total": shards_total})
