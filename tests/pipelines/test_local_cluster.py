"""The local cluster a job starts (``cluster.connect_ray`` without an address) keeps its idle worker processes:
light tasks (a chunk's read, one every few seconds) run in a worker that already exists instead of one that first
spends ~2 s of CPU starting. Run in a subprocess: a fresh local cluster, not the session's."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# One CPU, so Ray's default keeps one idle worker; four zero-CPU tasks at once need several workers.
SCRIPT = textwrap.dedent("""
    import os, time
    from distill_ray.cluster import connect_ray

    ray = connect_ray(num_cpus=1, progress_bars=False)

    @ray.remote(num_cpus=0)
    def worker_pid():
        time.sleep(1.0)
        return os.getpid()

    def is_ray_worker(pid):   # not a zombie left by a killed worker (empty cmdline), nor a reused pid
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().startswith(b"ray::")
        except OSError:
            return False

    pids = set(ray.get([worker_pid.remote() for _ in range(4)]))
    time.sleep(5)   # Ray's default ends idle workers beyond its limit after 1 s
    print(len(pids), sum(map(is_ray_worker, pids)))
""")


@pytest.mark.slow
def test_local_cluster_keeps_idle_workers():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    started, alive = map(int, done.stdout.split()[-2:])
    assert started >= 2, "the tasks did not need more than one worker: nothing to keep"
    assert alive == started, f"{started - alive} of {started} idle workers were ended within 5 s"
