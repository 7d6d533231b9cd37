"""The puzzle job's settings (typed) and its plan: which rows each chunk holds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from distill_ray.tasks.families import DIFFICULTIES
from distill_ray.tasks.puzzles import check_families, list_families

DEFAULT_P3 = str(Path(__file__).resolve().parents[3] / "shared" / "data" / "p3")


class PuzzleJobConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num: int = Field(ge=0, description="Procedural puzzles to generate (seeds 0..num-1), before verification and dedupe.")
    output: str = Field(description="Output directory of Parquet shards (DIR.manifest.json and DIR.rejected/ beside it).")
    families: list[str] | None = Field(None, description="Procedural families to use, round-robin (null: all).")
    difficulties: list[int] = Field(list(DIFFICULTIES), description="Difficulties, cycled over the seeds.")
    skip_exhausted: bool = Field(True, description="Probe each family x difficulty with its first draws before "
                                 "the job and draw a cell that stopped giving new puzzles no more than its probe "
                                 "found worthwhile; its turns go to the other cells (false: a strict round robin, "
                                 "where most of 10^6 seeds repeat small spaces).")
    seed: int = Field(0, ge=0, description="Job seed: picks puzzle seeds and teacher exemplars and sampling.")
    chunk_size: int = Field(10_000, ge=1, description="Seeds per chunk: one shard per chunk, the unit of resume.")
    teacher_prompts: int = Field(0, ge=0, description="Teacher prompts asking for new puzzles (0: none).")
    teacher_samples: int = Field(4, ge=1, description="Puzzles the teacher writes per prompt.")
    teacher_model: str = Field("smollm2", description="Teacher model (see teacher.model in the run config).")
    teacher_shots: int = Field(3, ge=1, description="Real P3 puzzles shown per teacher prompt.")
    teacher_temperature: float = Field(0.8, ge=0, description="Teacher sampling temperature.")
    teacher_max_new_tokens: int = Field(160, ge=1, description="Token budget of one teacher-written puzzle.")
    p3_path: str = Field(DEFAULT_P3, description="Directory with P3's puzzles.json and split.json (exemplars).")
    near_dup_scope: Literal["teacher", "all"] = Field(
        "teacher", description="Which rows get the MinHash LSH near-duplicate check (all rows get the exact one).")
    near_dup_threshold: float = Field(0.85, gt=0, lt=1, description="Jaccard similarity (token 3-grams) "
                                      "above which two puzzles are near duplicates.")
    verify_actors: int = Field(1, ge=1, description="Verifier actors.")
    verify_workers: int = Field(2, ge=1, description="Sandbox worker processes per verifier actor.")
    verify_batch: int = Field(512, ge=1, description="Rows per verifier call.")
    verify_resources: dict[str, float] = Field({}, description="Custom Ray resources each verifier actor needs "
                                               "(e.g. {verifier_node: 1}: the nodes started with them).")
    trusted_batch: int = Field(32, ge=1, description="Procedural (trusted) puzzles verified per sandboxed "
                               "process; 1: one P3 check each (see distill_ray.synth.batchcheck).")
    timeout_s: float = Field(2.0, gt=0, description="Sandbox CPU-time budget per check (wall clock capped at 3x + 1 s).")
    memory_mb: int = Field(512, ge=64, description="Sandbox address-space limit per process.")
    ray_address: str | None = Field(None, description="Ray cluster to join (null: local, or RAY_ADDRESS).")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray cluster (null: all).")
    progress_s: float = Field(5.0, gt=0, description="Seconds between progress lines.")

    @field_validator("families")
    @classmethod
    def _families(cls, value):
        return None if value is None else check_families(value)

    @field_validator("difficulties")
    @classmethod
    def _difficulties(cls, value):
        bad = [d for d in value if d not in DIFFICULTIES]
        if bad or not value:
            raise ValueError(f"difficulties must be a non-empty subset of {DIFFICULTIES}, got {value}")
        return value

    def content_params(self) -> dict:
        """The settings that decide the rows: a resumed job must use the same ones."""
        keep = ("num", "families", "difficulties", "skip_exhausted", "seed", "chunk_size", "teacher_prompts",
                "teacher_samples", "teacher_model", "teacher_shots", "teacher_temperature", "teacher_max_new_tokens",
                "near_dup_scope", "near_dup_threshold", "timeout_s", "memory_mb")
        params = {k: getattr(self, k) for k in keep}
        # Seed s is family s % F of the list: "all" is recorded as the list it means today, so a resume after a
        # family was added (a different seed -> puzzle map) is refused instead of mixing two maps.
        params["families"] = self.families or list_families()
        return params


@dataclass(frozen=True)
class Plan:
    """Procedural seeds [0, num) in chunks of ``chunk_size``; then teacher prompts, ``samples`` rows each, in
    chunks of about ``chunk_size`` rows."""

    num: int
    chunk_size: int
    teacher_prompts: int = 0
    samples: int = 1

    @classmethod
    def of(cls, cfg: PuzzleJobConfig) -> "Plan":
        return cls(cfg.num, cfg.chunk_size, cfg.teacher_prompts, cfg.teacher_samples)

    @property
    def procedural_chunks(self) -> int:
        return math.ceil(self.num / self.chunk_size)

    @property
    def prompts_per_chunk(self) -> int:
        return max(1, self.chunk_size // self.samples)

    @property
    def total_chunks(self) -> int:
        return self.procedural_chunks + math.ceil(self.teacher_prompts / self.prompts_per_chunk)

    def chunk_of_seed(self, seed: int) -> int:
        return seed // self.chunk_size

    def chunk_of_prompt(self, prompt: int) -> int:
        return self.procedural_chunks + prompt // self.prompts_per_chunk

    def rows_in(self, chunk: int) -> int:
        """Rows the chunk produces before any rejection (kept + rejected always add up to this)."""
        if chunk < self.procedural_chunks:
            return min(self.chunk_size, self.num - chunk * self.chunk_size)
        first = (chunk - self.procedural_chunks) * self.prompts_per_chunk
        return (min(first + self.prompts_per_chunk, self.teacher_prompts) - first) * self.samples

    @property
    def total_rows(self) -> int:
        return self.num + self.teacher_prompts * self.samples
