"""Kill things mid-job and lose nothing: each test really SIGKILLs a process while the job runs."""

from __future__ import annotations

import os
import signal
import sys

import pandas as pd
import psutil
import pytest

from distill_ray.config import PromptConfig, TeacherConfig, VerifyConfig
from distill_ray.stages import apply_stages, extract, prompt, teacher, verify
from distill_ray.tasks import PROBLEM_COLUMNS, load_problems

pytestmark = pytest.mark.slow


def kill_actor_process(stage_class: str) -> int:
    """SIGKILL the Ray Data pool actor running ``stage_class``, found by its process title (as an operator
    would find it with ``ps``) among this test session's processes (the local cluster's raylet is our child):
    never another job's actor on the same machine; returns its pid."""
    ours = psutil.Process().children(recursive=True)
    victims = [p for p in ours if is_pool_actor(" ".join(_cmdline(p)), stage_class)]
    assert victims, f"no live process runs {stage_class}"
    os.kill(victims[0].pid, signal.SIGKILL)
    return victims[0].pid


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:   # exited meanwhile
        return []


def is_pool_actor(title: str, stage_class: str) -> bool:
    # Ray Data fuses neighbouring map stages: "MapWorker(MapBatches(build_prompts)->MapBatches(TeacherActor))".
    return title.startswith("ray::MapWorker(") and f"MapBatches({stage_class})" in title


def restarts_of(stage_class: str) -> int:
    import ray

    # The state API needs the dashboard, which the test cluster does not start; GCS's actor table is enough.
    actors = ray._private.state.actors().values()
    return sum(a["NumRestarts"] for a in actors if is_pool_actor("ray::" + a["ActorClassName"], stage_class))


def drain_killing_once(ds, stage_class: str) -> tuple[pd.DataFrame, int]:
    """Consume the stream; right after the first output batch, kill the stage's actor (which is then busy
    with the next batch)."""
    batches, killed = [], None
    for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
        batches.append(batch)
        if killed is None:
            killed = kill_actor_process(stage_class)
    return pd.concat(batches, ignore_index=True), killed


def test_a_killed_teacher_actor_is_restarted_and_every_prompt_keeps_exactly_its_candidates(ray_cluster):
    import ray

    problems, _ = load_problems("puzzles", num_train=24, num_eval=0, seed=5)
    spec = TeacherConfig(name="smollm2", engine="hf", model="smollm2", samples=2, temperature=0.8, max_new_tokens=6,
                         batch_size=2, cpus_per_actor=1.0, torch_threads=1)
    restarts_before = restarts_of("TeacherActor")
    stages = [prompt.build(PromptConfig(num_shots=0), [], seed=0), teacher.build([spec], seed=1), extract.build()]
    ds = apply_stages(ray.data.from_items(problems, override_num_blocks=12), PROBLEM_COLUMNS, stages)
    rows, killed = drain_killing_once(ds, "TeacherActor")

    assert killed and restarts_of("TeacherActor") > restarts_before
    keys = list(zip(rows["task_id"], rows["sample_index"]))
    assert len(keys) == len(set(keys)) == 24 * 2                       # every candidate once, none twice
    assert set(rows["task_id"]) == {p["task_id"] for p in problems}
    assert all(sorted(group) == [0, 1] for _, group in rows.groupby("task_id")["sample_index"])


def test_a_killed_verifier_actor_is_restarted_and_no_verdict_is_lost_or_doubled(ray_cluster):
    import ray

    # ~40 ms of CPU per candidate keeps the actor busy long enough to be killed mid-batch.
    loop = "    s = 0\n    for i in range(300000):\n        s += i\n"
    rows = [{"id": i, "kind": "p3", "sat": f"def sat(x: int):\n    return x == {i}", "ans_type": "int",
             "program": f"def sol():\n{loop}    return {i if i % 3 else i + 1}", "expected": None, "tests": "",
             "entry_point": "", "source": "model-written"} for i in range(48)]
    spec = VerifyConfig(timeout_s=5.0, workers_per_actor=1, actors=1, cpus_per_actor=0.5, batch_size=4)
    restarts_before = restarts_of("VerifierActor")
    stage = verify.build(spec)
    ds = apply_stages(ray.data.from_items(rows, override_num_blocks=12), list(rows[0]), [stage])
    out, killed = drain_killing_once(ds, "VerifierActor")

    assert killed and restarts_of("VerifierActor") > restarts_before
    assert sorted(out["id"]) == list(range(48))                      # each check's verdict exactly once
    assert out.set_index("id")["passed"].to_dict() == {i: i % 3 != 0 for i in range(48)}


class GreedyStage:
    """Doubles a column; the first call ever (marked by a file) caps its own address space and then asks for a
    gigabyte, as a model that outgrows its node would."""

    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            import resource

            vms = psutil.Process().memory_info().vms
            resource.setrlimit(resource.RLIMIT_AS, (vms + (64 << 20), resource.RLIM_INFINITY))
            bytearray(1 << 30)   # MemoryError: a real failed allocation
        batch["y"] = batch["x"] * 2
        return batch


def test_an_actor_out_of_memory_is_restarted_and_the_job_finishes(ray_cluster, tmp_path):
    import ray

    from distill_ray.stages import ActorStage

    # Ray's workers cannot import this test module: ship GreedyStage by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    stage = ActorStage("greedy", reads=("x",), writes={"y": None}, cls=GreedyStage,
                       init_kwargs={"marker": str(tmp_path / "ran-out")}, cpus_per_actor=0.5, batch_size=4)
    ds = apply_stages(ray.data.from_items([{"x": i} for i in range(40)], override_num_blocks=10), ["x"], [stage])
    rows = ds.to_pandas()

    assert (tmp_path / "ran-out").exists() and restarts_of("GreedyStage") >= 1
    assert sorted(rows["x"]) == list(range(40)) and (rows["y"] == rows["x"] * 2).all()


def test_a_killed_sandbox_worker_has_its_checks_retried_on_a_fresh_one():
    import threading
    import time

    from distill_ray.verify import Check, SandboxLimits, Verifier

    loop = "    s = 0\n    for i in range(300000):\n        s += i\n"
    checks = [Check("p3", f"def sol():\n{loop}    return {i if i % 4 else -1}",
                    sat=f"def sat(x: int):\n    return x == {i}", ans_type="int") for i in range(40)]
    with Verifier(SandboxLimits(timeout_s=5), workers=2) as verifier:
        workers = [p for p in psutil.Process().children() if "distill_ray.verify.worker" in " ".join(p.cmdline())]
        assert len(workers) == 2
        result = {}
        thread = threading.Thread(target=lambda: result.update(verdicts=verifier.verify(checks)))
        thread.start()
        target = next(w for w in verifier._workers if w.proc.pid == workers[0].pid)
        deadline = time.monotonic() + 60
        while not target.pending and time.monotonic() < deadline:   # wait until it holds checks in flight
            time.sleep(0.005)
        os.kill(workers[0].pid, signal.SIGKILL)
        thread.join(timeout=120)
        retried = set(verifier._requeued)   # checks sent back to the queue (here: the dead worker's)
    # Not vacuous: the worker died holding checks, and those were run again on its replacement.
    assert retried, "the killed worker had no checks in flight"
    verdicts = result["verdicts"]
    assert [v.passed for v in verdicts] == [i % 4 != 0 for i in range(40)]
    assert not any(v.status == "error" for v in verdicts)
