"""A real multi-node Ray cluster on one machine (a head and worker nodes, each with its own raylet, object store
and workers: ``ray.cluster_utils.Cluster``). The distillation job runs its teacher pool on a teacher node and its
verifiers on a verifier node (``teacher.resources``, ``verify.resources``); a whole worker node is killed
mid-job (its raylet and every worker on it), and the job still writes every candidate exactly once and says what
was retried. The puzzle job's verifiers live on their own node, which is lost the same way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distill_ray.shards import Manifest

REPO = Path(__file__).resolve().parents[2]
NUM_TRAIN, SAMPLES, CHUNK = 18, 2, 3


@pytest.fixture
def cluster(monkeypatch):
    """A head node (the driver's: the sink and the job's files live there) and no worker node yet."""
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")   # short: Ray's socket paths must stay < 108 bytes
    # Cluster writes its address to <RAY_TMPDIR>/ray/ray_current_cluster (whatever temp_dir says): keep that file
    # in ours, neither failing where /tmp/ray does not exist yet (a fresh machine) nor redirecting another
    # cluster's `ray.init(address="auto")`.
    monkeypatch.setenv("RAY_TMPDIR", temp_dir)
    os.makedirs(os.path.join(temp_dir, "ray"))
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=2, temp_dir=temp_dir,
                                                                include_dashboard=False))
    yield cluster
    cluster.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def job_env(cluster) -> dict:
    return {**os.environ, "RAY_ADDRESS": cluster.address, "DISTILL_RAY_PROGRESS": "0"}


def actor_nodes(cluster, pool: str) -> set[str]:
    """Node ids of the live actors of a Ray Data pool (``TeacherActor``, ``VerifierActor``, ``ShardSink``)."""
    from distill_ray.cluster import pool_class

    return {a["Address"]["NodeID"] for a in cluster.global_state.actor_table(None).values()
            if pool_class(a["ActorClassName"]) == pool and a["State"] == "ALIVE"}


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the job ended before {what}: {process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"not {what} in {timeout} s"
        time.sleep(0.2)


def lose_node_mid_job(cluster, job: subprocess.Popen, node, resources: dict, pool: str, shards, chunks: int,
                      other_pools: dict | None = None):
    """Once ``job`` has written its first shard and ``pool``'s actors run on ``node`` (and each of
    ``other_pools`` on its node id): kill ``node`` outright (its raylet and every worker on it, at once); a new
    node with the same resources joins, as an autoscaler's or a spot replacement would. The job must then finish
    by itself (exit 0), its pool restarted on the new node. ``shards()`` lists the job's written shards,
    ``chunks`` is how many it writes in all. Returns (stdout, stderr)."""
    try:
        wait_for(lambda: any(shards()) and actor_nodes(cluster, pool), job, "a shard was written")
        for name, node_id in {pool: node.node_id, **(other_pools or {})}.items():
            assert actor_nodes(cluster, name) == {node_id}, name
        written_before = len(list(shards()))
        cluster.remove_node(node, allow_graceful=False)
        replacement = cluster.add_node(num_cpus=1, resources=resources)
        stdout, stderr = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            job.kill()
    assert written_before < chunks, "the node must be lost mid-job"
    assert job.returncode == 0, stderr[-3000:]
    assert actor_nodes(cluster, pool) <= {replacement.node_id}
    return stdout, stderr


@pytest.mark.slow
def test_a_lost_teacher_node_costs_a_restart_and_no_candidate(cluster, tmp_path):
    teacher_node = cluster.add_node(num_cpus=1, resources={"teacher_node": 1})
    verifier_node = cluster.add_node(num_cpus=1, resources={"verifier_node": 1})
    out = tmp_path / "run"
    shards_dir = out / "dataset"
    settings = [f"task.num_train={NUM_TRAIN}", "task.num_eval=1", "prompt.pool_size=6", "prompt.num_shots=1",
                f"teacher.samples={SAMPLES}", "teacher.max_new_tokens=8", "teacher.batch_size=3",
                "teacher.torch_threads=1", "teacher.resources={teacher_node: 1}", "verify.resources={verifier_node: 1}",
                "verify.batch_size=2", f"chunk_size={CHUNK}"]
    job = subprocess.Popen([sys.executable, "-m", "distill_ray.cli", "generate", "--output-dir", str(out),
                            *[arg for s in settings for arg in ("--set", s)]],
                           cwd=REPO, env=job_env(cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = lose_node_mid_job(cluster, job, teacher_node, {"teacher_node": 1}, "TeacherActor",
                                       lambda: list(shards_dir.glob("part-*.parquet")), NUM_TRAIN // CHUNK,
                                       # the sink on the driver's node
                                       {"VerifierActor": verifier_node.node_id, "ShardSink": cluster.head_node.node_id})

    rows = pq.read_table(shards_dir, columns=["task_id", "teacher", "sample_index"]).to_pandas()
    keys = list(zip(rows["task_id"], rows["teacher"], rows["sample_index"]))
    assert len(keys) == len(set(keys)) == NUM_TRAIN * SAMPLES   # every candidate, once
    assert not list(shards_dir.glob(".*"))
    manifest = Manifest.for_output(shards_dir).load()
    assert manifest["status"] == "complete"
    retried = manifest["stats"]["retried"]
    assert retried["nodes_lost"] == 1 and retried["actor_restarts"].get("TeacherActor", 0) >= 1, retried
    assert "retried after failures" in stderr + stdout


@pytest.mark.slow
def test_a_lost_verifier_node_loses_no_puzzle(cluster, tmp_path):
    verifier_node = cluster.add_node(num_cpus=1, resources={"verifier_node": 1})
    out = tmp_path / "puzzles"
    num, chunk = 4000, 250
    job = subprocess.Popen([sys.executable, "-m", "distill_ray.cli", "puzzles", "--num", str(num), "--output", str(out),
                            "--set", f"chunk_size={chunk}", "--set", "verify_batch=64", "--set", "progress_s=1",
                            "--set", "verify_resources={verifier_node: 1}"],
                           cwd=REPO, env=job_env(cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = lose_node_mid_job(cluster, job, verifier_node, {"verifier_node": 1}, "VerifierActor",
                                  lambda: list(out.glob("part-*.parquet")), num // chunk)
    summary = Manifest.for_output(out).load()["summary"]
    assert summary["chunks_done"] == num // chunk and summary["rows_done"] == num
    kept = pq.read_table(out, columns=["id", "sat"]).to_pandas()
    rejected = pq.read_table(f"{out}.rejected", columns=["id"]).to_pandas()
    ids = list(kept["id"]) + list(rejected["id"])
    assert len(ids) == len(set(ids)) == num   # every seed once, kept or rejected with a reason
    retried = summary["run"]["retried"]
    assert retried["nodes_lost"] == 1 and retried["actor_restarts"].get("VerifierActor", 0) >= 1, retried
