"""verify: every candidate program checked in the sandbox (``verify/``), in parallel sandbox processes per
actor. Each row carries its own check, so anyone can re-run it from the row alone (``distill-ray verify``)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import pandas as pd
import pyarrow as pa

from distill_ray.config import VerifyConfig
from distill_ray.stages.base import ActorStage

CHECK_COLUMNS = ("kind", "sat", "ans_type", "expected", "tests", "entry_point")
READS = ("program", *CHECK_COLUMNS)
WRITES = {"passed": pa.bool_(), "status": pa.string(), "answer": pa.string(), "detail": pa.string(),
          "verify_seconds": pa.float64()}

TRUSTED_SAT_SOURCES = ("puzzles", "p3", "gsm8k")   # not "jsonl": a user file may hold model-written puzzles


class VerifierActor:
    """The verifier actor of every pipeline: a sandboxed ``Verifier`` per actor (checks of a batch run in
    parallel sandbox processes) and a ``judge(verifier, batch, **options)`` that turns the batch's rows into
    checks and the verdicts back into columns: ``judge_rows`` here, the puzzle job's ``check.judge_puzzles``."""

    def __init__(self, limits: dict, workers: int = 1, judge: Callable | None = None, **options):
        from distill_ray.verify import SandboxLimits, Verifier

        self.verifier = Verifier(SandboxLimits(**limits), workers=workers)
        self.judge = functools.partial(judge or judge_rows, **options)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return self.judge(self.verifier, batch)

    def close(self) -> None:
        self.verifier.close()


def judge_rows(verifier, batch: pd.DataFrame, dedupe: bool = True) -> pd.DataFrame:
    """Each candidate row's own check (``row_check``), its verdict in the WRITES columns.

    dedupe: a check that repeats one earlier in the batch (a teacher's samples of a problem often agree word for
    word) is run once; its repeats get the same verdict and ``verify_seconds`` 0 (no time was spent on them)."""
    # Only the columns a check needs: a candidate row carries ~30 more (messages, completion, logprobs, ...), and
    # itertuples would turn every one of them into Python objects, row by row.
    needed = [c for c in (*READS, "source") if c in batch.columns]
    checks = [row_check(row) for row in batch[needed].itertuples(index=False)]
    if dedupe:
        distinct = list(dict.fromkeys(checks))   # in order of first appearance
        first = dict(zip(distinct, verifier.verify(distinct)))
        repeat = {check: dataclasses.replace(verdict, seconds=0.0) for check, verdict in first.items()}
        # A check's first row takes its verdict (pop), every later row the repeat's.
        verdicts = [first.pop(check) if check in first else repeat[check] for check in checks]
    else:
        verdicts = verifier.verify(checks)
    batch["passed"] = [v.passed for v in verdicts]
    batch["status"] = [v.status for v in verdicts]
    batch["answer"] = [v.answer for v in verdicts]
    batch["detail"] = [v.detail for v in verdicts]
    batch["verify_seconds"] = [v.seconds for v in verdicts]
    return batch


def row_check(row):
    """The self-contained check of a dataset row. An unlabelled GSM8K row (no expected number) records the
    number its program returns (status ``answered``): the vote decides those rows."""
    from distill_ray.verify import Check

    expected = None if pd.isna(row.expected) else float(row.expected)  # None, NaN or pd.NA: no number
    # sat from our puzzle families or real P3 is curated, not model-written: judged in a persistent process
    trusted = getattr(row, "source", None) in TRUSTED_SAT_SOURCES
    return Check(kind=row.kind, program=row.program, sat=row.sat, ans_type=row.ans_type, expected=expected,
                 tests=row.tests, entry_point=row.entry_point, trusted_sat=trusted,
                 record_answer=row.kind == "gsm8k" and expected is None)


def build(verify: VerifyConfig) -> ActorStage:
    return ActorStage("verify", reads=READS, writes=WRITES, cls=VerifierActor,
                      init_kwargs=dict(limits={"timeout_s": verify.timeout_s, "memory_mb": verify.memory_mb},
                                       workers=verify.workers_per_actor, dedupe=verify.dedupe),
                      actors=verify.actors, cpus_per_actor=verify.cpus_per_actor, batch_size=verify.batch_size,
                      memory_gib=verify.actor_memory_gib, resources=verify.resources)
