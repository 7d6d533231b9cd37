"""Typed configuration: a YAML file validated by pydantic, with dotted ``key=value`` overrides.

Every field documents itself (``Field(description=...)``); the README's config reference is generated
from these models (``distill-ray config-reference``). Validation happens here, at the edge: the rest of
the code receives plain values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default


class RayConfig(Section):
    address: str | None = Field(None, description="Ray cluster to join; null starts a local cluster "
                                "(or joins the one named by RAY_ADDRESS).")
    num_cpus: int | None = Field(None, description="CPUs of the local cluster (null: all of this machine's).")


class TaskConfig(Section):
    source: Literal["puzzles", "gsm8k", "p3", "jsonl"] = Field(
        "puzzles", description="Problem source: our procedural P3-style puzzles, GSM8K program-of-thought, real "
        "P3 puzzles, or your own problems as JSON lines (see README, 'Your own problems').")
    path: str | None = Field(None, description="Directory of the data files (gsm8k, p3) or the .jsonl file "
                             "(jsonl); unused for puzzles.")
    num_train: int = Field(32, ge=1, description="Problems the teachers solve to build the training set.")
    num_eval: int = Field(16, ge=1, description="Held-out problems for evaluation (disjoint from train).")
    difficulty: int = Field(1, ge=1, le=3, description="Puzzle difficulty, 1 (trivial) to 3.")
    families: list[str] | None = Field(None, description="Puzzle families to use (null: all).")
    max_question_chars: int = Field(16_000, ge=1, description="Longer questions in a jsonl source are "
                                    "quarantined instead of prompted.")


class PromptConfig(Section):
    num_shots: int = Field(3, ge=0, description="Few-shot exemplars in each teacher prompt.")
    pool_size: int = Field(42, ge=0, description="Train-split problems reserved as the exemplar pool (never "
                           "solved by the teacher nor trained on); GSM8K uses its hand-written exemplars.")
    exemplars: Literal["fixed", "random", "retrieved"] = Field(
        "retrieved", description="Same exemplars for every prompt, drawn per prompt (seeded), or retrieved: "
        "the most similar train problems (same family first, then identifier overlap).")


class SamplingConfig(Section):
    samples: int = Field(4, ge=1, description="Candidates sampled per prompt (n).")
    temperature: float = Field(0.8, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(48, ge=1, description="Token budget per candidate.")


class TeacherConfig(SamplingConfig):
    name: str = Field("smollm2", description="Name recorded in every candidate row's `teacher` column.")
    engine: Literal["hf"] = Field("hf", description="Generation engine (hf = transformers).")
    model: str = Field("smollm2", description="'smollm2' (the embedded SmolLM2-135M-Instruct GGUF), a .gguf "
                       "file, or a Hugging Face model directory.")
    batch_size: int = Field(8, ge=1, description="Prompts per generate() call.")
    actors: int = Field(1, ge=1, description="Engine replicas (Ray actors) in the teacher pool.")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved per teacher actor.")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per teacher actor.")
    torch_threads: int | None = Field(None, ge=1, description="torch threads per actor (null: torch default).")


class VerifyConfig(Section):
    timeout_s: float = Field(2.0, gt=0, description="Wall-clock limit per candidate (module top level + call).")
    memory_mb: int = Field(512, ge=64, description="Address-space limit per candidate process.")
    actors: int = Field(1, ge=1, description="Verifier actors.")
    cpus_per_actor: float = Field(0.5, gt=0, description="CPUs reserved per verifier actor.")
    workers_per_actor: int = Field(2, ge=1, description="Sandbox processes run in parallel by each actor.")
    batch_size: int = Field(32, ge=1, description="Candidates per verifier call.")


class VoteConfig(Section):
    require_majority: bool = Field(False, description="Keep only verified samples whose answer is the "
                                   "prompt's majority answer.")
    partitions: int = Field(8, ge=1, description="Shuffle partitions of the group-by-prompt vote (raise it "
                            "for millions of rows).")


class TrainConfig(Section):
    enabled: bool = Field(True, description="Train a student (false: stop after the dataset).")
    student_layers: int = Field(6, ge=1, description="Layers of the student, copied from evenly spaced teacher "
                                "layers (first and last included).")
    workers: int = Field(2, ge=1, description="Ray Train workers.")
    cpus_per_worker: float = Field(0.5, gt=0, description="CPUs per worker (fractional leaves room for Ray "
                                   "Data's read tasks).")
    use_gpu: bool = Field(False, description="Train on GPUs.")
    zero_stage: Literal[2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    epochs: int = Field(3, ge=1, description="Passes over the verified samples.")
    batch_size: int = Field(4, ge=1, description="Micro-batch per worker.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW).")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    max_length: int = Field(384, ge=16, description="Tokens per training row (prompt + target).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")


class EvalConfig(Section):
    samples: int = Field(4, ge=1, description="Samples per eval problem (n of pass@k).")
    k: list[int] = Field([1, 2, 4], description="The k of pass@k; each must be <= samples.")
    temperature: float = Field(0.8, ge=0.0, description="Sampling temperature at evaluation.")
    max_new_tokens: int = Field(48, ge=1, description="Token budget per eval sample.")
    models: list[Literal["teacher", "student_init", "student"]] = Field(
        ["teacher", "student_init", "student"],
        description="What to evaluate: the teacher (few-shot), the student before and after training (zero-shot).")

    @model_validator(mode="after")
    def _k_within_samples(self):
        too_big = [k for k in self.k if k > self.samples or k < 1]
        if too_big:
            raise ValueError(f"eval.k {too_big} must be between 1 and eval.samples={self.samples}")
        return self


class RunConfig(Section):
    name: str = Field("run", description="Run name (recorded in the report).")
    output_dir: str = Field("outputs/run", description="Where dataset/, student/ and the report go.")
    seed: int = Field(0, description="Seed for problems, exemplars, sampling and training.")
    ray: RayConfig = RayConfig()
    task: TaskConfig = TaskConfig()
    prompt: PromptConfig = PromptConfig()
    teacher: TeacherConfig = TeacherConfig()
    verify: VerifyConfig = VerifyConfig()
    vote: VoteConfig = VoteConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()


class ConfigError(ValueError):
    """A bad config: the message names each bad field."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    data = yaml.safe_load(Path(path).read_text()) if path else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for item in overrides or []:
        apply_override(data, item)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_errors(error, path)) from None


def apply_override(data: dict, item: str) -> None:
    """``teacher.samples=8`` sets data['teacher']['samples'] = 8 (the value is parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like section.field=value")
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[leaf] = yaml.safe_load(raw)


def format_errors(error: ValidationError, path) -> str:
    lines = [f"invalid config{f' {path}' if path else ''}:"]
    for e in error.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {field}: {e['msg']}")
    return "\n".join(lines)


def reference(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(field, default, description) for every leaf field: the README's config reference."""
    rows = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += reference(annotation, key + ".")
        else:
            rows.append((key, repr(info.default), info.description or ""))
    return rows
