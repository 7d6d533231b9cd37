"""The distillation pipeline's stages, and the stage lists for generation and evaluation.

Data flow (one row per problem until the teacher, then one row per candidate):

    problem columns -> prompt -> teacher -> extract -> verify -> vote -> Parquet

Every function here is plain Python over a pandas batch, so each stage is unit-testable without Ray.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass

import pandas as pd
import pyarrow as pa

from distill_ray.extract import extract_program
from distill_ray.prompts import Exemplar, build_messages, choose_exemplars, response_prefix
from distill_ray.stages import ActorStage, BatchStage, GroupStage, Stage
from distill_ray.teachers import SamplingSettings, make_engine
from distill_ray.vote import VOTE_COLUMNS, vote_group

CHECK_COLUMNS = ("kind", "sat", "ans_type", "expected", "tests", "entry_point")
TEACHER_COLUMNS = ("teacher", "prompt", "sample_index", "completion", "finished", "prompt_tokens",
                   "completion_tokens", "gen_seconds")
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
    batch["response_prefix"] = [response_prefix(kind) for kind in batch["kind"]]
    return batch


# --- teacher ----------------------------------------------------------------------------------------

class TeacherActor:
    """One engine per actor; each input row becomes ``sampling.n`` candidate rows."""

    def __init__(self, name: str, engine: str, model: str, sampling: dict, engine_options: dict | None = None):
        self.name = name
        self.engine = make_engine(engine, model, **(engine_options or {}))
        self.sampling = SamplingSettings(**sampling)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        prompts = [self.engine.render(json.loads(m), p) for m, p in zip(batch["messages"], batch["response_prefix"])]
        # Seed per batch from its content: reruns are reproducible and batches differ from each other.
        seed = self.sampling.seed + zlib.crc32("".join(batch["task_id"]).encode())
        sampling = SamplingSettings(**{**asdict(self.sampling), "seed": seed})
        start = time.perf_counter()
        generations = self.engine.generate(prompts, sampling)
        elapsed = time.perf_counter() - start
        n = sampling.n
        rows = batch.loc[batch.index.repeat(n)].reset_index(drop=True)
        flat = [g for per_prompt in generations for g in per_prompt]
        rows["teacher"] = self.name
        rows["prompt"] = [p for p in prompts for _ in range(n)]
        rows["sample_index"] = [i for _ in prompts for i in range(n)]
        rows["completion"] = [g.text for g in flat]
        rows["finished"] = [g.finished for g in flat]
        rows["prompt_tokens"] = [g.prompt_tokens for g in flat]
        rows["completion_tokens"] = [g.completion_tokens for g in flat]
        rows["gen_seconds"] = elapsed / max(len(flat), 1)
        return rows


# --- extract ----------------------------------------------------------------------------------------

def extract_programs(batch: pd.DataFrame) -> pd.DataFrame:
    batch["program"] = [extract_program(p, c) for p, c in zip(batch["response_prefix"], batch["completion"])]
    return batch


# --- verify -----------------------------------------------------------------------------------------

class VerifierActor:
    """A sandboxed verifier per actor; checks of a batch run in parallel sandbox processes."""

    def __init__(self, limits: dict, workers: int = 1):
        from distill_ray.verify import SandboxLimits, Verifier

        self.verifier = Verifier(SandboxLimits(**limits), workers=workers)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        verdicts = self.verifier.verify([row_check(row) for row in batch.itertuples(index=False)])
        batch["passed"] = [v.passed for v in verdicts]
        batch["status"] = [v.status for v in verdicts]
        batch["answer"] = [v.answer for v in verdicts]
        batch["detail"] = [v.detail for v in verdicts]
        batch["verify_seconds"] = [v.seconds for v in verdicts]
        return batch


def row_check(row):
    """The self-contained check of a dataset row: anyone can re-run it from the row alone."""
    from distill_ray.verify import Check

    expected = None if pd.isna(row.expected) else float(row.expected)  # None, NaN or pd.NA: no number
    return Check(kind=row.kind, program=row.program, sat=row.sat, ans_type=row.ans_type, expected=expected,
                 tests=row.tests, entry_point=row.entry_point)


# --- output schema ----------------------------------------------------------------------------------

# Explicit types: a batch where every value is missing (no answer obtained, no expected number) would
# otherwise be inferred as Arrow's null type, and Parquet shards of one dataset would disagree.
COLUMN_TYPES = {
    **{c: pa.string() for c in ("task_id", "split", "source", "family", "kind", "question", "sat", "ans_type",
                                "tests", "entry_point", "reference", "messages", "response_prefix", "teacher",
                                "prompt", "completion", "program", "status", "answer", "detail", "vote_answer")},
    **{c: pa.int64() for c in ("difficulty", "sample_index", "prompt_tokens", "completion_tokens")},
    **{c: pa.float64() for c in ("expected", "gen_seconds", "verify_seconds", "vote_share", "answer_share")},
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


@dataclass(frozen=True)
class VerifySpec:
    limits: dict
    workers_per_actor: int = 2
    actors: int = 1
    cpus_per_actor: float = 0.5
    batch_size: int = 32


def teacher_stages(teacher: TeacherSpec, exemplars: list[Exemplar], seed: int) -> list[Stage]:
    """prompt -> teacher -> extract."""
    return [
        BatchStage("prompt", reads=("kind", "question", "family"), writes=("messages", "response_prefix"),
                   fn=build_prompts, fn_kwargs=dict(exemplars=exemplars, num_shots=teacher.num_shots,
                                                    strategy=teacher.exemplar_strategy, seed=seed)),
        ActorStage("teacher", reads=("task_id", "messages", "response_prefix"), writes=TEACHER_COLUMNS,
                   cls=TeacherActor, init_kwargs=dict(name=teacher.name, engine=teacher.engine, model=teacher.model,
                                                      sampling=asdict(teacher.sampling),
                                                      engine_options=teacher.engine_options),
                   actors=teacher.actors, cpus_per_actor=teacher.cpus_per_actor,
                   gpus_per_actor=teacher.gpus_per_actor, batch_size=teacher.batch_size),
        BatchStage("extract", reads=("response_prefix", "completion"), writes=("program",), fn=extract_programs),
    ]


def sampling_stages(teacher: TeacherSpec, exemplars: list[Exemplar], verify: VerifySpec, seed: int) -> list[Stage]:
    """prompt -> teacher -> extract -> verify: what generation and evaluation share."""
    return teacher_stages(teacher, exemplars, seed) + [verify_stage(verify)]


def verify_stage(verify: VerifySpec) -> Stage:
    return ActorStage("verify", reads=("program", *CHECK_COLUMNS), writes=VERDICT_COLUMNS, cls=VerifierActor,
                      init_kwargs=dict(limits=verify.limits, workers=verify.workers_per_actor),
                      actors=verify.actors, cpus_per_actor=verify.cpus_per_actor, batch_size=verify.batch_size)


def vote_stage(require_majority: bool, partitions: int | None = None) -> Stage:
    return GroupStage("vote", reads=("task_id", "teacher", "sample_index", "answer", "passed", "program"),
                      writes=VOTE_COLUMNS, key="task_id", fn=vote_group,
                      fn_kwargs=dict(require_majority=require_majority), partitions=partitions)
