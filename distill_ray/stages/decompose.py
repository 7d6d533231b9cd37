"""decompose_prefix and decompose_split: the two stages decompositional distillation adds to the distillation
pipeline (``pipelines/decompose.py``). The first gives every prompt the decomposition's opening (or the solver's),
the second cuts each verified decomposition into the decomposer's and the solver's rows
(``decomposition.py`` holds the format)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from distill_ray.decomposition import split_row
from distill_ray.stages.base import LIGHT_TASK, BatchStage

PREFIX_READS = ("kind",)
PREFIX_WRITES = {"response_prefix": pa.string()}   # rewritten: the answer's opening for this recipe
SPLIT_READS = ("question", "program", "passed")
SPLIT_WRITES = {"decomposer_target": pa.string(),   # the sub-questions, after the prompt's prefix (null: no row)
                "solver_question": pa.string(),     # the problem, then the sub-questions: the solver's question
                "solver_target": pa.string()}       # the code after the sub-questions


def set_prefix(batch: pd.DataFrame, prefix: str) -> pd.DataFrame:
    if (batch["kind"] != "p3").any():   # the format is a P3 answer function (sol)
        raise ValueError(f"decomposition needs p3 problems, got kinds {sorted(set(batch['kind']))}")
    batch["response_prefix"] = prefix
    return batch


def split_rows(batch: pd.DataFrame, min_steps: int) -> pd.DataFrame:
    """One decomposer target and one solver row per verified decomposition; nulls on every other row."""
    splits = [split_row(q, p, bool(ok), min_steps) or {} for q, p, ok in
              zip(batch["question"], batch["program"], batch["passed"])]
    for column in SPLIT_WRITES:
        batch[column] = [s.get(column) for s in splits]
    return batch


def build_prefix(prefix: str) -> BatchStage:
    return BatchStage("decompose_prefix", reads=PREFIX_READS, writes=PREFIX_WRITES, fn=set_prefix, cpus=LIGHT_TASK,
                      fn_kwargs=dict(prefix=prefix))


def build_split(min_steps: int) -> BatchStage:
    return BatchStage("decompose_split", reads=SPLIT_READS, writes=SPLIT_WRITES, fn=split_rows, cpus=LIGHT_TASK,
                      fn_kwargs=dict(min_steps=min_steps))
