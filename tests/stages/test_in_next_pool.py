"""A light stage marked ``in_next_pool`` runs inside the next actor pool's actors (no Ray task of its own)."""

import os
import sys
from dataclasses import replace

import pyarrow as pa

from distill_ray.config import PromptConfig
from distill_ray.stages import ActorStage, BatchStage, apply_stages
from distill_ray.stages import prompt
from distill_ray.stages.base import LIGHT_TASK


def note_pid(batch):
    batch["light_pid"] = os.getpid()
    return batch


class NotePid:
    def __call__(self, batch):
        batch["pool_pid"] = os.getpid()
        return batch


LIGHT = BatchStage("light", reads=("x",), writes={"light_pid": pa.int64()}, fn=note_pid, cpus=LIGHT_TASK,
                   in_next_pool=True)
POOL = ActorStage("pool", reads=("x", "light_pid"), writes={"pool_pid": pa.int64()}, cls=NotePid, batch_size=4,
                  cpus_per_actor=0.5)


def run(ray, stages):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # workers cannot import this test module
    return apply_stages(ray.data.from_items([{"x": i} for i in range(20)]), ("x",), stages).to_pandas()


def test_the_light_stage_runs_in_the_pools_actor_and_every_row_passes_once(ray_cluster):
    rows = run(ray_cluster, [LIGHT, POOL])
    assert sorted(rows["x"]) == list(range(20))
    assert (rows["light_pid"] == rows["pool_pid"]).all()


def test_without_the_flag_or_without_a_pool_after_it_the_stage_runs_as_tasks(ray_cluster):
    rows = run(ray_cluster, [replace(LIGHT, in_next_pool=False), POOL])
    assert sorted(rows["x"]) == list(range(20)) and (rows["light_pid"] != rows["pool_pid"]).all()
    last = run(ray_cluster, [LIGHT])   # nothing after it: its own tasks, not dropped
    assert sorted(last["x"]) == list(range(20)) and last["light_pid"].notna().all()


def test_the_prompt_stage_renders_in_the_teacher_pool_unless_a_retriever_embeds(monkeypatch):
    import distill_ray.epr

    assert prompt.build(PromptConfig(), [], seed=0).in_next_pool
    assert "actors" in prompt.build(PromptConfig(), [], seed=0).kind
    monkeypatch.setattr(distill_ray.epr, "load_retriever", lambda path: object())
    learned = prompt.build(PromptConfig(exemplars="learned", retriever="r"), [], seed=0)
    assert not learned.in_next_pool and learned.kind == "tasks"
