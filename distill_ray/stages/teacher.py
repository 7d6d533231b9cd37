"""teacher: each prompt becomes ``samples`` candidate rows from a teacher's engine; several teachers are one
actor pool each, over the same prompts, their rows unioned and labelled with the ``teacher`` column."""

from __future__ import annotations

import functools
import json
import zlib
from dataclasses import replace

import pandas as pd
import pyarrow as pa

from distill_ray.config import TeacherConfig
from distill_ray.prompts import PLAIN_STOP, render_plain_prompt
from distill_ray.stages.base import ActorStage, Stage, UnionStage
from distill_ray.stages.resample import Resampler
from distill_ray.teachers import SamplingSettings, make_engine
from distill_ray.teachers.provenance import CANDIDATE_COLUMNS, candidate_columns

READS = ("task_id", "messages", "response_prefix")
WRITES = {"teacher": pa.string(), **CANDIDATE_COLUMNS}
RESAMPLE_READS = ("kind", "sat", "question")           # what the critic reads of the problem
RESAMPLE_WRITES = {"attempts": pa.int64()}             # generations a candidate slot took (1: not resampled)


def sampling_settings(teacher: TeacherConfig, seed: int) -> SamplingSettings:
    """The engine's call parameters from the teacher's settings (a plain prompt also stops where the model
    starts the next problem)."""
    stop = PLAIN_STOP if teacher.prompt_style == "plain" else ()
    return SamplingSettings(n=teacher.samples, temperature=teacher.temperature, top_p=teacher.top_p,
                            max_new_tokens=teacher.max_new_tokens, seed=seed,
                            top_k_logprobs=teacher.top_k_logprobs, stop=stop)


def actor_memory_gib(engine: str, model: str, setting: float | str | None = "auto") -> float | None:
    """The memory a teacher actor reserves: ``setting`` in GiB, or for "auto" twice the model's weights (the
    loaded copy and generation's working memory) + 0.5 GiB of runtime (a remote engine holds no weights: 0.5);
    None: no reservation (also for "auto" where the weights cannot be found here)."""
    if setting != "auto":
        return setting
    if engine in ("openai", "replay"):   # the weights live on a server, or there are none
        return 0.5
    from distill_ray.models import resolve_model

    try:
        model_dir = resolve_model(model)
    except (FileNotFoundError, ValueError):
        return None
    weights = sum(f.stat().st_size for pattern in ("*.safetensors", "*.bin") for f in model_dir.glob(pattern))
    return round(0.5 + 2 * weights / 2**30, 2) if weights else None


def engine_options(teacher: TeacherConfig) -> dict:
    options = dict(teacher.engine_options)
    if teacher.torch_threads and teacher.engine == "hf":
        options["torch_threads"] = teacher.torch_threads
    return options


def batch_sampling(sampling: SamplingSettings, task_ids) -> SamplingSettings:
    """The sampling of one batch: seeded from its content, so reruns are reproducible and batches differ."""
    return replace(sampling, seed=sampling.seed + zlib.crc32("".join(task_ids).encode()))


class TeacherActor:
    """One engine per actor; each input row becomes ``teacher.samples`` candidate rows."""

    def __init__(self, teacher: TeacherConfig, seed: int, resample: dict | None = None):
        self.name = teacher.name
        self.engine = make_engine(teacher.engine, teacher.model, **engine_options(teacher))
        self.sampling = sampling_settings(teacher, seed)
        self.prompt_style = teacher.prompt_style
        self.resample = Resampler(**resample) if resample else None   # critic-guided (stages/resample.py)

    def render(self, messages: str, prefix: str) -> str:
        """chat: the model's own template (instruct models); plain: few-shot text (base models)."""
        if self.prompt_style == "plain":
            return render_plain_prompt(getattr(self.engine, "tokenizer", None), json.loads(messages), prefix)
        return self.engine.render(json.loads(messages), prefix)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        prompts = [self.render(m, p) for m, p in zip(batch["messages"], batch["response_prefix"])]
        sampling = batch_sampling(self.sampling, batch["task_id"])
        generations = self.engine.generate(prompts, sampling)
        rows = batch.loc[batch.index.repeat(sampling.n)].reset_index(drop=True)
        rows["teacher"] = self.name
        for column, values in candidate_columns(prompts, generations, sampling, self.engine.provenance()).items():
            rows[column] = values
        return self.resample(self.engine, rows, prompts, sampling) if self.resample else rows


def pool(teacher: TeacherConfig, seed: int, name: str = "teacher", resample: dict | None = None) -> ActorStage:
    """One teacher's actor pool; ``resample``: Resampler's arguments (the critic's weights, threshold, rounds)."""
    reads, writes = (READS + RESAMPLE_READS, {**WRITES, **RESAMPLE_WRITES}) if resample else (READS, WRITES)
    return ActorStage(name, reads=reads, writes=writes, cls=TeacherActor,
                      init_kwargs=dict(teacher=teacher, seed=seed, resample=resample),
                      actors=teacher.actors, cpus_per_actor=teacher.cpus_per_actor,
                      gpus_per_actor=teacher.gpus_per_actor, batch_size=teacher.batch_size,
                      fanout=teacher.samples, resources=teacher.resources,
                      memory_gib=functools.partial(actor_memory_gib, teacher.engine, teacher.model,
                                                   teacher.actor_memory_gib) if teacher.actor_memory_gib else None)


def build(teachers: list[TeacherConfig], seed: int, resample: dict | None = None) -> Stage:
    """One teacher: its actor pool. Several: one pool (branch) each, unioned. ``seed``: the sampling seed;
    ``resample``: critic-guided resampling in every pool (see ``pool``)."""
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names must be unique, got {names}")
    if len(teachers) == 1:
        return pool(teachers[0], seed, resample=resample)
    branches = tuple((pool(t, seed, f"teacher:{t.name}", resample),) for t in teachers)
    first = branches[0][0]
    return UnionStage(f"teachers[{' | '.join(names)}]", reads=first.reads, writes=first.writes, branches=branches)
