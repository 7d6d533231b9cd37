"""Joining a Ray cluster: the one place every job (distillation, puzzles, experiment) connects."""

from __future__ import annotations

import os
import re
import sys
import tempfile

from distill_ray.stopping import keep_after_ray_init

# How long an idle worker process of a local cluster is kept, where Ray's default is one second. Ray keeps as many
# idle workers as the node has CPUs and ends the rest after that second; the pools' actors alone outnumber a small
# machine's CPUs, so every light task (a chunk's read, one every few seconds) ran in a fresh worker that first
# spent ~2 s of CPU starting Python, Ray and pandas: 8-16% of the 10^5-problem stream's CPU on 2 cores (README,
# "The distillation stream at scale"). A cluster started with `ray start` sets it there
# (RAY_idle_worker_killing_time_threshold_ms).
LOCAL_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 60_000}


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
                     _temp_dir=tempfile.mkdtemp(prefix="distill-ray-"), _system_config=LOCAL_SYSTEM_CONFIG)
        keep_after_ray_init()   # a SIGTERM stops the job gracefully (ray.init's handler just exits)
    if progress_bars is None:
        default = "1" if sys.stderr.isatty() else "0"
        progress_bars = os.environ.get("DISTILL_RAY_PROGRESS", default) == "1"
    ray.data.DataContext.get_current().enable_progress_bars = progress_bars
    return ray


def alive_nodes() -> set[str]:
    """The ids of the cluster's live nodes (``job_retries`` counts which of them died)."""
    import ray

    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def job_retries(alive_before: set[str]) -> dict:
    """What Ray retried for this job so far: restarts per actor class (an actor that died, killed or with its
    node, and was started again; Ray Data then retried its batch), and how many of the nodes alive before
    (``alive_nodes()`` at the start) have died. Read from the GCS's tables (Ray's private state API: the public
    one needs the dashboard, which a local run does not start); an empty report where they cannot be read."""
    import ray
    from ray._private import state

    try:
        job = ray.JobID.from_hex(ray.get_runtime_context().get_job_id())
        actors = state.actors(job_id=job).values()
        lost = alive_before - alive_nodes()
    except Exception:   # noqa: BLE001 - a report, never a reason to fail a finished job
        return {}
    restarts: dict[str, int] = {}
    for actor in actors:
        if actor["NumRestarts"]:
            name = pool_class(actor["ActorClassName"])
            restarts[name] = restarts.get(name, 0) + actor["NumRestarts"]
    return {"actor_restarts": dict(sorted(restarts.items())), "nodes_lost": len(lost)}


def pool_class(actor_class: str) -> str:
    """The class a Ray Data pool actor runs: ``MapWorker(ReadRange->MapBatches(TeacherActor))`` -> ``TeacherActor``
    (other actors keep their class name)."""
    match = re.search(r"MapBatches\((\w+)\)\)$", actor_class)
    return match.group(1) if match else actor_class
