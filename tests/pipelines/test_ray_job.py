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


def start_head(env: dict, attempts: int = 3) -> tuple[subprocess.Popen, int]:
    """A head node on ports of its own, and its dashboard port once that port answers.

    A free port can be taken by another process between our probe and Ray's bind (another cluster on the
    machine, this session's own workers), and `ray start --block` then exits: such a start is retried on
    fresh ports. Each attempt's output is kept, so a head that never starts says why."""
    reasons = []
    for _ in range(attempts):
        dashboard = free_port()
        temp_dir = tempfile.mkdtemp(prefix="rj-", dir="/tmp")
        # Every port its own: the test session's cluster already holds Ray's defaults (agent 52365, ...).
        ports = [f"--{name}={free_port()}" for name in ("port", "dashboard-agent-listen-port",
                                                          "dashboard-agent-grpc-port", "metrics-export-port",
                                                          "ray-client-server-port", "runtime-env-agent-port")]
        log = Path(temp_dir) / "head.out"
        with open(log, "wb") as out:
            head = subprocess.Popen([BIN / "ray", "start", "--head", "--block", *ports,
                                     f"--dashboard-port={dashboard}", "--include-dashboard=true", "--num-cpus=2",
                                     f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                                    env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if wait_for_dashboard(dashboard, head):
            return head, dashboard
        reasons.append(f"exit {head.returncode}: {log.read_text(errors='replace')[-3000:]}")
    raise AssertionError("ray start --head exited early every time:\n" + "\n---\n".join(reasons))


def wait_for_dashboard(port: int, head: subprocess.Popen, seconds: float = 120) -> bool:
    """True once the dashboard answers, False if the head exited first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if head.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
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
    """The README's recipe as written, with the demo's vLLM teacher: the job runs from Ray's copy of the
    repository, which has no .venv-vllm (failed before vllm_python looked beside the job's own venv)."""
    # Ray 2.60 enables token auth by default; the head and every client must agree on the mode.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}:{os.environ['PATH']}",
           "DISTILL_RAY_PROGRESS": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    env.pop("RAY_ADDRESS", None)
    # A short temp dir: Ray's Unix socket paths under pytest's tmp_path exceed the 107-byte limit.
    # --block keeps the head in the foreground: stopping this one process stops exactly this cluster
    # (`ray stop` would also kill the test session's own cluster).
    head, dashboard = start_head(env)
    try:
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
