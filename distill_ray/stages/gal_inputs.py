"""gal_inputs: a teacher's completion of a GAL writer prompt becomes a problem row with the columns of a real one
(``gal.py`` parses it), or carries ``reject``: why it is malformed. Nothing is filtered here: every written
problem reaches the driver, which dedupes and decontaminates them all together and records each one's fate."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from distill_ray.gal import SOURCE, written_problem
from distill_ray.stages.base import LIGHT_TASK, BatchStage
from distill_ray.tasks.schema import PROBLEM_COLUMNS, make_problem

READS = ("task_id", "kind", "family", "difficulty", "teacher", "sample_index", "completion", "finished")
WRITES = {**PROBLEM_COLUMNS,
          "writer_prompt": pa.string(),   # the writer prompt's task_id ("gal/p3")
          "reject": pa.string()}          # "" or why the completion is not a problem


def written_rows(batch: pd.DataFrame, source: str = SOURCE) -> pd.DataFrame:
    """The problem columns (``task_id`` becomes the written problem's: prompt, teacher, sample; ``source``: the
    method that wrote it) beside the teacher's columns, which stay for the audit."""
    problems, rejects = [], []
    for row in batch.itertuples(index=False):
        fields, reject = written_problem(row.kind, row.completion, bool(row.finished))
        problems.append(make_problem(task_id=f"{row.task_id}/{row.teacher}/k{row.sample_index}", split="train",
                                     source=source, family=row.family, difficulty=row.difficulty, kind=row.kind,
                                     **fields))
        rejects.append(reject)
    rest = batch.reset_index(drop=True)
    rest = rest.assign(writer_prompt=rest["task_id"], reject=rejects).drop(
        columns=[c for c in PROBLEM_COLUMNS if c in rest])
    return pd.concat([pd.DataFrame(problems, columns=list(PROBLEM_COLUMNS)), rest], axis=1)


def build(name: str = "gal_inputs", source: str = SOURCE) -> BatchStage:
    """``name`` and ``source``: mix-up's stage is this one under its own name (``mixup_inputs``)."""
    # No CPU reserved: string work that must never wait behind the teacher pools (see base.LIGHT_TASK).
    return BatchStage(name, reads=READS, writes=WRITES, fn=written_rows, fn_kwargs={"source": source},
                      cpus=LIGHT_TASK)
