"""`ray job submit` against a real head node started with `ray start --head`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_dashboard(port: int, head: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited early"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"dashboard did not open port {port}")


def submit_job(dashboard: int, env: dict, entrypoint: list[str]) -> subprocess.CompletedProcess:
    """`ray job submit`, retried while the head's job agent is still starting (the dashboard port opens first)."""
    for _ in range(30):
        submit = subprocess.run([BIN / "ray", "job", "submit", "--address", f"http://127.0.0.1:{dashboard}",
                                 "--working-dir", str(REPO), "--", *entrypoint],
                                env=env, capture_output=True, text=True, timeout=600)
        if "No available agent" not in submit.stdout + submit.stderr:
            return submit
        time.sleep(2)
    return submit


def test_submitted_job_writes_its_dataset(tmp_path):
    # Ray 2.60 enables token auth by default; the head and every client must agree on the mode.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}:{os.environ['PATH']}",
           "DISTILL_RAY_PROGRESS": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    env.pop("RAY_ADDRESS", None)
    dashboard = free_port()
    # A short temp dir: Ray's Unix socket paths under pytest's tmp_path exceed the 107-byte limit.
    # --block keeps the head in the foreground: stopping this one process stops exactly this cluster
    # (`ray stop` would also kill the test session's own cluster).
    # Every port its own: the test session's cluster already holds Ray's defaults (agent 52365, ...).
    ports = [f"--{name}={free_port()}" for name in ("port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                      "metrics-export-port", "ray-client-server-port",
                                                      "runtime-env-agent-port")]
    head = subprocess.Popen([BIN / "ray", "start", "--head", "--block", *ports,
                             f"--dashboard-port={dashboard}", "--include-dashboard=true", "--num-cpus=2",
                             f"--temp-dir={tempfile.mkdtemp(prefix='rj-', dir='/tmp')}", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_dashboard(dashboard, head)
        out = tmp_path / "job-output"
        submit = submit_job(dashboard, env, ["python", "jobs/distill.py", "generate", "--config", "configs/demo.yaml",
                                             "--output-dir", str(out), "--num-train", "3", "--samples", "2",
                                             "--set", "teacher.max_new_tokens=8", "--set", "prompt.pool_size=6"])
        assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-4000:]
        assert "succeeded" in submit.stdout
        rows = pq.read_table(out / "dataset").to_pandas()
        assert len(rows) == 6 and rows["task_id"].nunique() == 3
        assert set(rows["status"]) <= {"pass", "fail", "error", "timeout", "memory", "invalid"}
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=60)
