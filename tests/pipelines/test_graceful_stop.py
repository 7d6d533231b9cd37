"""SIGTERM (what ``ray job stop`` sends) stops a generation job and a puzzle job cleanly: the driver exits with
128 + 15, its manifest says it stopped and how far it got, no temporary file is left, the local Ray cluster it
started is gone, and a rerun resumes without redoing a finished shard."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from distill_ray.shards import Manifest

REPO = Path(__file__).resolve().parents[2]


def run_until_first_shard_then_stop(command: list[str], shards_dir: Path, ray_tmp: str) -> tuple[dict, str]:
    """Start ``command``, SIGTERM its driver (only the driver, as ``ray job stop`` signals the job's process)
    once a shard exists; return the shards written then (name -> inode, mtime) and the driver's stderr."""
    import os

    env = {**os.environ, "TMPDIR": ray_tmp, "DISTILL_RAY_PROGRESS": "0"}
    env.pop("RAY_ADDRESS", None)
    job = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any(shards_dir.glob("part-*.parquet")):
            assert job.poll() is None, f"the job ended before writing a shard: {job.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no shard written in 300 s"
            time.sleep(0.2)
        job.send_signal(signal.SIGTERM)
        _, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by SIGTERM" in stderr
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards_dir.glob("part-*.parquet")}, stderr


def ray_processes_of(ray_tmp: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if ray_tmp in " ".join(p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


def assert_cluster_gone(ray_tmp: str) -> None:
    deadline = time.monotonic() + 60   # Ray's workers exit once their raylet is gone
    while ray_processes_of(ray_tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes_of(ray_tmp), "the stopped job left its Ray cluster running"


@pytest.mark.slow
def test_sigterm_stops_a_generation_job_cleanly_and_it_resumes(tmp_path):
    num_train, samples, chunk = 16, 2, 4
    out = tmp_path / "run"
    shards_dir = out / "dataset"
    settings = [f"task.num_train={num_train}", "task.num_eval=1", "prompt.pool_size=6", "prompt.num_shots=1",
                f"teacher.samples={samples}", "teacher.max_new_tokens=8", "teacher.batch_size=3",
                "teacher.torch_threads=1", "verify.batch_size=2", f"chunk_size={chunk}", "ray.num_cpus=2"]
    command = [sys.executable, "-m", "distill_ray.cli", "generate", "--output-dir", str(out),
               *[arg for s in settings for arg in ("--set", s)]]
    ray_tmp = tempfile.mkdtemp(prefix="rg", dir="/tmp")
    written, _ = run_until_first_shard_then_stop(command, shards_dir, ray_tmp)
    assert_cluster_gone(ray_tmp)
    manifest = Manifest.for_output(shards_dir).load()
    assert manifest["status"] == "stopped" and manifest["stopped"]["signal"] == "SIGTERM"
    assert 1 <= manifest["stopped"]["shards_done"] <= len(written) < num_train // chunk
    assert not list(shards_dir.glob(".*")), "an abandoned shard's temporary file was left"

    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards_dir.glob("part-*.parquet")}
    assert all(after[name] == stamp for name, stamp in written.items())   # finished shards not redone
    rows = pq.read_table(shards_dir, columns=["task_id", "teacher", "sample_index"]).to_pandas()
    keys = list(zip(rows["task_id"], rows["teacher"], rows["sample_index"]))
    assert len(keys) == len(set(keys)) == num_train * samples
    assert Manifest.for_output(shards_dir).load()["status"] == "complete"


@pytest.mark.slow
def test_sigterm_stops_a_puzzle_job_cleanly_and_it_resumes(tmp_path):
    num, chunk = 6000, 300
    out = tmp_path / "ds"
    command = [sys.executable, "-m", "distill_ray.cli", "puzzles", "--num", str(num), "--output", str(out),
               "--set", f"chunk_size={chunk}", "--set", "num_cpus=2", "--set", "verify_batch=150"]
    ray_tmp = tempfile.mkdtemp(prefix="rp", dir="/tmp")
    written, stderr = run_until_first_shard_then_stop(command, out, ray_tmp)
    assert_cluster_gone(ray_tmp)
    manifest = Manifest.for_output(out).load()
    assert manifest["status"] == "stopped"
    assert 1 <= manifest["stopped"]["shards_done"] <= len(written) < num // chunk
    assert not list(out.glob(".*")) and not list(Path(f"{out}.rejected").glob(".*"))

    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{len(written)} already written" in second.stderr
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("part-*.parquet")}
    assert all(after[name] == stamp for name, stamp in written.items())
    kept = pq.read_table(out, columns=["id"])["id"].to_pylist()
    rejected = pq.read_table(f"{out}.rejected", columns=["id"])["id"].to_pylist()
    assert len(kept) + len(rejected) == len(set(kept) | set(rejected)) == num
    assert Manifest.for_output(out).load()["status"] == "complete"
