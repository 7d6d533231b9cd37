"""puzzle_teacher: teacher prompts (ids from ``num`` on) to teacher-written puzzles, ``teacher_samples`` rows per
prompt, each with its fate so far (``synth/teacher.py`` builds the prompts and parses the completions)."""

from __future__ import annotations

import functools
from dataclasses import replace

import pandas as pd
import pyarrow as pa

from distill_ray.stages.base import ActorStage, BatchStage
from distill_ray.stages.generate import PUZZLE_COLUMNS, WRITES as ROW_WRITES
from distill_ray.stages.teacher import actor_memory_gib
from distill_ray.synth.config import Plan, PuzzleJobConfig
from distill_ray.synth.dedupe import add_keys
from distill_ray.synth.teacher import RESPONSE_PREFIX, example_pool, parse_pair, prompt_messages

PROMPT_WRITES = {"prompt": pa.int64(),   # the teacher prompt's index
                 "chunk": pa.int64()}


def prompt_rows(batch: pd.DataFrame, num: int, procedural_chunks: int, prompts_per_chunk: int,
                done: frozenset) -> pd.DataFrame:
    """Teacher prompts (``id`` from ``num`` on) with their chunk; prompts of written chunks are skipped."""
    prompts = [i - num for i in batch["id"].tolist() if i >= num]
    prompts = [p for p in prompts if procedural_chunks + p // prompts_per_chunk not in done]
    return pd.DataFrame({"prompt": prompts, "chunk": [procedural_chunks + p // prompts_per_chunk for p in prompts]})


class TeacherPuzzleActor:
    """Teacher prompts (``prompt`` index, ``chunk``) in, ``samples`` candidate rows per prompt out."""

    def __init__(self, model: str, sampling: dict, p3_path: str, shots: int, seed: int, engine: str = "hf",
                 scope: str = "teacher", threshold: float = 0.85):
        from distill_ray.teachers import SamplingSettings, make_engine

        self.engine = make_engine(engine, model)
        self.sampling = SamplingSettings(**sampling)
        self.pool = example_pool(p3_path)
        self.shots, self.seed = shots, seed
        self.scope, self.threshold = scope, threshold

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        indices = [int(p) for p in batch["prompt"]]
        prompts = [self.engine.render(prompt_messages(self.pool, p, self.shots, self.seed), RESPONSE_PREFIX)
                   for p in indices]
        # Seeded by the batch's first prompt: a rerun of the same chunk samples the same completions.
        sampling = replace(self.sampling, seed=self.sampling.seed + indices[0]) if indices else self.sampling
        generations = self.engine.generate(prompts, sampling) if prompts else []
        rows = []
        for p, chunk, gens in zip(indices, batch["chunk"], generations):
            for k, g in enumerate(gens):
                sat, sol, ans_type, reject = parse_pair(g.text)
                rows.append(dict(id=f"teacher/p{p}/k{k}", chunk=int(chunk), source="teacher", family="teacher",
                                 difficulty=0, ans_type=ans_type, sat=sat, sol=sol, trusted=False, reject=reject,
                                 detail=g.text[:300] if reject else ""))
        return add_keys(pd.DataFrame(rows, columns=list(PUZZLE_COLUMNS)), self.scope, self.threshold)


def build(cfg: PuzzleJobConfig, plan: Plan, done: frozenset) -> tuple[BatchStage, ActorStage]:
    prompts = BatchStage("puzzle_prompts", reads=("id",), writes=PROMPT_WRITES, fn=prompt_rows, cpus=0.5,
                         fn_kwargs=dict(num=plan.num, procedural_chunks=plan.procedural_chunks,
                                        prompts_per_chunk=plan.prompts_per_chunk, done=done))
    sampling = dict(n=cfg.teacher_samples, temperature=cfg.teacher_temperature, top_p=0.95,
                    max_new_tokens=cfg.teacher_max_new_tokens, seed=cfg.seed)
    teacher = ActorStage("puzzle_teacher", reads=tuple(PROMPT_WRITES), writes=ROW_WRITES, cls=TeacherPuzzleActor,
                         init_kwargs=dict(model=cfg.teacher_model, sampling=sampling, p3_path=cfg.p3_path,
                                          shots=cfg.teacher_shots, seed=cfg.seed, scope=cfg.near_dup_scope,
                                          threshold=cfg.near_dup_threshold),
                         actors=1, cpus_per_actor=0.5, batch_size=4,
                         memory_gib=functools.partial(actor_memory_gib, "hf", cfg.teacher_model))
    return prompts, teacher
