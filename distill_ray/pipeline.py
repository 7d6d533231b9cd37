"""The distillation pipeline's stages, and the stage lists for generation and evaluation.

Data flow (one row per problem until the teachers, then one row per candidate):

    problem columns -> prompt -> [teacher A | teacher B | ...] -> union -> extract -> verify -> vote -> Parquet

Each teacher is its own actor pool (its own model, prompt style and sampling); the branches share the
prompt stage's chat messages and their candidate rows are unioned, each labelled with its ``teacher``.

Every function here is plain Python over a pandas batch, so each stage is unit-testable without Ray.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass, field, replace

import pandas as pd
import pyarrow as pa

from distill_ray.extract import extract_program
from distill_ray.prompts import (PLAIN_STOP, Exemplar, build_messages, choose_exemplars, default_bos, render_plain,
                                 response_prefix)
from distill_ray.stages import ActorStage, BatchStage, GroupStage, Stage, check_flow
from distill_ray.teachers import SamplingSettings, make_engine
from distill_ray.teachers.provenance import CANDIDATE_COLUMNS, candidate_columns
from distill_ray.vote import VOTE_COLUMNS, VOTE_READS, vote_group

CHECK_COLUMNS = ("kind", "sat", "ans_type", "expected", "tests", "entry_point")
TEACHER_COLUMNS = ("teacher", *CANDIDATE_COLUMNS)
VERDICT_COLUMNS = ("passed", "status", "answer", "detail", "verify_seconds")


# --- prompt -----------------------------------------------------------------------------------------

def build_prompts(batch: pd.DataFrame, exemplars: list[Exemplar], num_shots: int, strategy: str,
                  seed: int) -> pd.DataFrame:
    """Few-shot chat messages for each problem (``num_shots=0`` is the zero-shot student prompt)."""
    messages = []
    for kind, question, family in zip(batch["kind"], batch["question"], batch["family"]):
        shots = choose_exemplars(exemplars, num_shots, strategy, seed, question, family) if num_shots else []
        messages.append(json.dumps(build_messages(kind, question, shots)))
    batch["messages"] = messages
    batch["response_prefix"] = [response_prefix(k, q) for k, q in zip(batch["kind"], batch["question"])]
    return batch


# --- teacher ----------------------------------------------------------------------------------------

class TeacherActor:
    """One engine per actor; each input row becomes ``sampling.n`` candidate rows."""

    def __init__(self, name: str, engine: str, model: str, sampling: dict, engine_options: dict | None = None,
                 prompt_style: str = "chat"):
        self.name = name
        self.engine = make_engine(engine, model, **(engine_options or {}))
        self.sampling = SamplingSettings(**sampling)
        self.prompt_style = prompt_style
        if prompt_style == "plain":   # a plain answer ends where the model starts the next problem
            self.sampling = replace(self.sampling, stop=tuple(dict.fromkeys(self.sampling.stop + PLAIN_STOP)))

    def render(self, messages: str, prefix: str) -> str:
        """chat: the model's own template (instruct models); plain: few-shot text (base models)."""
        if self.prompt_style == "plain":
            return default_bos(getattr(self.engine, "tokenizer", None)) + render_plain(json.loads(messages), prefix)
        return self.engine.render(json.loads(messages), prefix)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        prompts = [self.render(m, p) for m, p in zip(batch["messages"], batch["response_prefix"])]
        # Seed per batch from its content: reruns are reproducible and batches differ from each other.
        seed = self.sampling.seed + zlib.crc32("".join(batch["task_id"]).encode())
        sampling = SamplingSettings(**{**asdict(self.sampling), "seed": seed})
        generations = self.engine.generate(prompts, sampling)
        rows = batch.loc[batch.index.repeat(sampling.n)].reset_index(drop=True)
        rows["teacher"] = self.name
        for column, values in candidate_columns(prompts, generations, sampling, self.engine.provenance()).items():
            rows[column] = values
        return rows


# --- extract ----------------------------------------------------------------------------------------

def extract_programs(batch: pd.DataFrame) -> pd.DataFrame:
    batch["program"] = [extract_program(p, c, k) for p, c, k in
                        zip(batch["response_prefix"], batch["completion"], batch["kind"])]
    return batch


# --- verify -----------------------------------------------------------------------------------------

class VerifierActor:
    """A sandboxed verifier per actor; checks of a batch run in parallel sandbox processes."""

    def __init__(self, limits: dict, workers: int = 1):
        from distill_ray.verify import SandboxLimits, Verifier

        self.verifier = Verifier(SandboxLimits(**limits), workers=workers)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        checks = [row_check(row) for row in batch.itertuples(index=False)]
        unlabelled = [c.kind == "gsm8k" and c.expected is None for c in checks]
        # No expected number: run the program against a placeholder and keep only its answer (the vote
        # decides these rows); the placeholder's verdict is discarded below.
        checks = [replace(c, expected=0.0) if u else c for c, u in zip(checks, unlabelled)]
        verdicts = [unlabelled_verdict(v) if u else v for v, u in zip(self.verifier.verify(checks), unlabelled)]
        batch["passed"] = [v.passed for v in verdicts]
        batch["status"] = [v.status for v in verdicts]
        batch["answer"] = [v.answer for v in verdicts]
        batch["detail"] = [v.detail for v in verdicts]
        batch["verify_seconds"] = [v.seconds for v in verdicts]
        return batch


def unlabelled_verdict(verdict):
    """An unlabelled gsm8k row: status ``answered`` with the number it returned, never passed; a program
    that returned no finite number keeps its error/fail status and has no answer."""
    try:
        number = float(verdict.answer) if verdict.status in ("pass", "fail") and verdict.answer else None
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        return replace(verdict, passed=False, status="answered", detail="no expected answer: answer recorded")
    return replace(verdict, passed=False, answer=None)


def row_check(row):
    """The self-contained check of a dataset row: anyone can re-run it from the row alone."""
    from distill_ray.verify import Check

    expected = None if pd.isna(row.expected) else float(row.expected)  # None, NaN or pd.NA: no number
    # sat from our puzzle families or real P3 is curated, not model-written: judged in a persistent process
    trusted = getattr(row, "source", None) in TRUSTED_SAT_SOURCES
    return Check(kind=row.kind, program=row.program, sat=row.sat, ans_type=row.ans_type, expected=expected,
                 tests=row.tests, entry_point=row.entry_point, trusted_sat=trusted)


TRUSTED_SAT_SOURCES = ("puzzles", "p3", "gsm8k")   # not "jsonl": a user file may hold model-written puzzles


# --- output schema ----------------------------------------------------------------------------------

# Explicit types: a batch where every value is missing (no answer obtained, no expected number) would
# otherwise be inferred as Arrow's null type, and Parquet shards of one dataset would disagree.
COLUMN_TYPES = {
    **{c: pa.string() for c in ("task_id", "split", "source", "family", "kind", "question", "sat", "ans_type",
                                "tests", "entry_point", "reference", "messages", "response_prefix", "teacher",
                                "prompt", "completion", "program", "status", "answer", "detail", "vote_answer",
                                "gen_error", "label_type", "label_distribution", "teacher_counts", "logprobs",
                                "engine", "engine_model", "engine_version", "sampling")},
    **{c: pa.int64() for c in ("difficulty", "sample_index", "prompt_tokens", "completion_tokens")},
    **{c: pa.float64() for c in ("expected", "gen_seconds", "verify_seconds", "vote_share", "answer_share",
                                 "label_weight")},
    **{c: pa.bool_() for c in ("finished", "passed", "agreement", "duplicate", "keep")},
}


def to_arrow(batch: pd.DataFrame) -> pa.Table:
    schema = pa.schema([(c, COLUMN_TYPES.get(c) or pa.Array.from_pandas(batch[c]).type) for c in batch.columns])
    return pa.Table.from_pandas(batch, schema=schema, preserve_index=False)


# --- stage lists ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TeacherSpec:
    """A model to sample from, with its prompt shape and its actor pool."""

    name: str
    engine: str
    model: str
    sampling: SamplingSettings
    num_shots: int = 3
    exemplar_strategy: str = "fixed"
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = 8
    engine_options: dict | None = None
    prompt_style: str = "chat"
    weight: float = 1.0


@dataclass(frozen=True)
class VerifySpec:
    limits: dict
    workers_per_actor: int = 2
    actors: int = 1
    cpus_per_actor: float = 0.5
    batch_size: int = 32


@dataclass(frozen=True)
class UnionStage(Stage):
    """Parallel branches over the same input rows, their outputs unioned (Ray Data ``union``): one
    teacher pool per branch. Each branch's flow is checked like a stage list."""

    branches: tuple[tuple[Stage, ...], ...] = field(default_factory=tuple)

    def apply(self, ds):
        outputs = []
        for branch in self.branches:
            out = ds
            for stage in branch:
                out = stage.apply(out)
            outputs.append(out)
        return outputs[0].union(*outputs[1:]) if len(outputs) > 1 else outputs[0]


def _as_list(teachers) -> list[TeacherSpec]:
    return [teachers] if isinstance(teachers, TeacherSpec) else list(teachers)


def prompt_stage(teacher: TeacherSpec, exemplars: list[Exemplar], seed: int) -> Stage:
    return BatchStage("prompt", reads=("kind", "question", "family"), writes=("messages", "response_prefix"),
                      fn=build_prompts, fn_kwargs=dict(exemplars=exemplars, num_shots=teacher.num_shots,
                                                       strategy=teacher.exemplar_strategy, seed=seed))


def teacher_stage(teacher: TeacherSpec, name: str = "teacher") -> Stage:
    return ActorStage(name, reads=("task_id", "messages", "response_prefix"),
                      writes=TEACHER_COLUMNS, cls=TeacherActor,
                      init_kwargs=dict(name=teacher.name, engine=teacher.engine, model=teacher.model,
                                       sampling=asdict(teacher.sampling), engine_options=teacher.engine_options,
                                       prompt_style=teacher.prompt_style),
                      actors=teacher.actors, cpus_per_actor=teacher.cpus_per_actor,
                      gpus_per_actor=teacher.gpus_per_actor, batch_size=teacher.batch_size)


def teachers_stage(teachers: list[TeacherSpec]) -> Stage:
    """One teacher: its actor stage. Several: one branch (actor pool) each, unioned."""
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names must be unique, got {names}")
    if len(teachers) == 1:
        return teacher_stage(teachers[0])
    branches = tuple((teacher_stage(t, f"teacher:{t.name}"),) for t in teachers)
    return UnionStage(f"teachers[{' | '.join(names)}]", reads=branches[0][0].reads, writes=TEACHER_COLUMNS,
                      branches=branches)


def teacher_stages(teachers: TeacherSpec | list[TeacherSpec], exemplars: list[Exemplar], seed: int) -> list[Stage]:
    """prompt -> [teacher A | teacher B | ...] -> union -> extract (the prompt's shots are shared)."""
    teachers = _as_list(teachers)
    stages = [prompt_stage(teachers[0], exemplars, seed), teachers_stage(teachers),
              BatchStage("extract", reads=("kind", "response_prefix", "completion"), writes=("program",),
                         fn=extract_programs)]
    for branch in getattr(stages[1], "branches", ()):
        check_flow(("task_id", "messages", "response_prefix"), list(branch))
    return stages


def sampling_stages(teachers: TeacherSpec | list[TeacherSpec], exemplars: list[Exemplar], verify: VerifySpec,
                    seed: int) -> list[Stage]:
    """prompt -> teachers -> extract -> verify: what generation and evaluation share."""
    return teacher_stages(teachers, exemplars, seed) + [verify_stage(verify)]


def verify_stage(verify: VerifySpec) -> Stage:
    return ActorStage("verify", reads=("program", *CHECK_COLUMNS), writes=VERDICT_COLUMNS, cls=VerifierActor,
                      init_kwargs=dict(limits=verify.limits, workers=verify.workers_per_actor),
                      actors=verify.actors, cpus_per_actor=verify.cpus_per_actor, batch_size=verify.batch_size)


def teacher_weights(teachers: TeacherSpec | list[TeacherSpec]) -> dict[str, float]:
    return {t.name: t.weight for t in _as_list(teachers)}


def vote_stage(require_majority: bool, partitions: int | None = None,
               weights: dict[str, float] | None = None) -> Stage:
    return GroupStage("vote", reads=VOTE_READS, writes=VOTE_COLUMNS, key="task_id", fn=vote_group,
                      fn_kwargs=dict(require_majority=require_majority, weights=weights or {}),
                      partitions=partitions)
