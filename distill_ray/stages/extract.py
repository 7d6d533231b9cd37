"""extract: the candidate program in each completion (``extract.py`` knows where a program ends)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from distill_ray.extract import extract_program
from distill_ray.stages.base import LIGHT_TASK, BatchStage

READS = ("kind", "response_prefix", "completion")
WRITES = {"program": pa.string()}


def extract_programs(batch: pd.DataFrame) -> pd.DataFrame:
    batch["program"] = [extract_program(p, c, k) for p, c, k in
                        zip(batch["response_prefix"], batch["completion"], batch["kind"])]
    return batch


def build() -> BatchStage:
    return BatchStage("extract", reads=READS, writes=WRITES, fn=extract_programs, cpus=LIGHT_TASK)
