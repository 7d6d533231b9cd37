"""A generation job killed with SIGKILL and rerun with the same output path finishes the rest and writes no row
twice; a rerun with other settings is refused."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from distill_ray.resumable import ProblemChunks, row_params, run_in_shards
from distill_ray.shards import Manifest

REPO = Path(__file__).resolve().parents[2]
NUM_TRAIN, SAMPLES, CHUNK = 16, 2, 4


def generate_command(output_dir: Path) -> list[str]:
    settings = [f"task.num_train={NUM_TRAIN}", "task.num_eval=1", "prompt.pool_size=6", "prompt.num_shots=1",
                f"teacher.samples={SAMPLES}", "teacher.max_new_tokens=8", "teacher.batch_size=3",
                "teacher.torch_threads=1", "verify.batch_size=2", f"chunk_size={CHUNK}", "ray.num_cpus=2"]
    return [sys.executable, "-m", "distill_ray.cli", "generate", "--output-dir", str(output_dir),
            *[arg for s in settings for arg in ("--set", s)]]


def kill_session(process: subprocess.Popen, marker: str) -> None:
    """SIGKILL the driver's whole session and any Ray process of its cluster (found by its temp dir)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    for p in psutil.process_iter(["pid", "cmdline"]):
        if marker in " ".join(p.info["cmdline"] or []):
            p.kill()


@pytest.mark.slow
def test_a_killed_generation_job_resumes_where_it_stopped_and_writes_no_duplicate(tmp_path):
    out = tmp_path / "run"
    shards_dir = out / "dataset"
    ray_tmp = tempfile.mkdtemp(prefix="rz", dir="/tmp")   # short: Ray's socket paths must stay < 108 bytes
    env = {**os.environ, "TMPDIR": ray_tmp, "DISTILL_RAY_PROGRESS": "0", "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    first = subprocess.Popen(generate_command(out), cwd=REPO, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not any(shards_dir.glob("part-*.parquet")):   # chunks finish in any order: wait for the first
            assert first.poll() is None, "the first run ended before writing a shard"
            assert time.monotonic() < deadline, "no shard written in 300 s"
            time.sleep(0.2)
    finally:
        kill_session(first, ray_tmp)
    written_before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards_dir.glob("part-*.parquet")}
    assert 1 <= len(written_before) < NUM_TRAIN // CHUNK, "the kill must land mid-job"

    second = subprocess.run(generate_command(out), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "already written, skipping them" in second.stdout

    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards_dir.glob("part-*.parquet")}
    assert len(after) == NUM_TRAIN // CHUNK
    assert all(after[name] == stamp for name, stamp in written_before.items())   # done shards untouched
    rows = pq.read_table(shards_dir, columns=["task_id", "teacher", "sample_index"]).to_pandas()
    keys = list(zip(rows["task_id"], rows["teacher"], rows["sample_index"]))
    assert len(keys) == len(set(keys)) == NUM_TRAIN * SAMPLES
    assert rows["task_id"].nunique() == NUM_TRAIN
    assert not list(shards_dir.glob(".*"))                                         # no temp file left behind
    assert Manifest.for_output(shards_dir).load()["stats"]["candidates"] == NUM_TRAIN * SAMPLES


def test_resuming_with_other_settings_is_refused_but_other_resources_are_fine(tmp_path):
    config = {"seed": 0, "teacher": {"model": "smollm2", "samples": 4, "actors": 1, "batch_size": 8}}
    run_in_shards(ProblemChunks([], 4), {}, [], tmp_path / "dataset", row_params(config))
    more_resources = {"seed": 0, "teacher": {"model": "smollm2", "samples": 4, "actors": 3, "batch_size": 2}}
    run_in_shards(ProblemChunks([], 4), {}, [], tmp_path / "dataset", row_params(more_resources))
    other_rows = {"seed": 0, "teacher": {"model": "smollm2", "samples": 8, "actors": 1, "batch_size": 8}}
    with pytest.raises(ValueError, match="other parameters"):
        run_in_shards(ProblemChunks([], 4), {}, [], tmp_path / "dataset", row_params(other_rows))
    run_in_shards(ProblemChunks([], 4), {}, [], tmp_path / "dataset", row_params(other_rows), resume=False)  # starts over
