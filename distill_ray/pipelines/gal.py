"""The GAL writers' pipeline (``gal.py``): the teachers write new problems, one row per written problem.

    writer prompts -> [teacher A | teacher B | ...] -> gal_inputs -> the driver (dedupe, decontaminate)

Mix-up's (``mixup.py``) is the same over pair prompts, with ``mixup_inputs`` and the ``mixup`` section's sampling.

The teacher stage is the distillation pipeline's own (``stages/teacher.py``), with the writers' sampling
settings (``gal`` section); the kept problems then enter the distillation pipeline like real ones.
"""

from __future__ import annotations

import pyarrow as pa

from distill_ray.config import GalConfig, MixupConfig, TeacherConfig
from distill_ray.stages import Columns, Stage, gal_inputs, mixup_inputs, teacher

# The writer prompts' columns (``gal.writer_prompts``).
SOURCE_COLUMNS: Columns = {"task_id": pa.string(), "kind": pa.string(), "family": pa.string(),
                           "difficulty": pa.int64(), "messages": pa.string(), "response_prefix": pa.string(),
                           "shown": pa.string()}


def writers(teachers: list[TeacherConfig], gal: GalConfig | MixupConfig) -> list[TeacherConfig]:
    """The teachers, sampling as writers: ``gal.samples`` problems per prompt, hotter and longer."""
    return [t.model_copy(update=dict(samples=gal.samples, temperature=gal.temperature,
                                     max_new_tokens=gal.max_new_tokens, top_k_logprobs=0)) for t in teachers]


def gal_stages(teachers: list[TeacherConfig], gal: GalConfig, seed: int) -> list[Stage]:
    return [teacher.build(writers(teachers, gal), seed), gal_inputs.build()]


def mixup_stages(teachers: list[TeacherConfig], mixup: MixupConfig, seed: int) -> list[Stage]:
    return [teacher.build(writers(teachers, mixup), seed), mixup_inputs.build()]
