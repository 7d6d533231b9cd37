"""The stages, one module each: ``prompt``, ``teacher``, ``extract``, ``verify``, ``critic`` (optional), ``vote``
(the distillation pipeline; ``resample`` is the teacher actors' critic-guided resampling) and the puzzle job's
``generate``, ``check``, ``sink``. Each declares the columns it reads and writes
(with their Arrow types) beside its function or actor, and a ``build()`` from its validated config section.
``base`` holds the stage kinds, the flow check and the wrapper every stage runs in."""

from distill_ray.stages.base import (ActorStage, BatchStage, Columns, GroupStage, Stage, UnionStage, apply_stages,
                                     check_flow, describe, rows_per_row, to_arrow)

__all__ = ["ActorStage", "BatchStage", "Columns", "GroupStage", "Stage", "UnionStage", "apply_stages", "check_flow",
           "describe", "rows_per_row", "to_arrow"]
