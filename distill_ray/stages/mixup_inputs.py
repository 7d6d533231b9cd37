"""mixup_inputs: a teacher's completion of a mix-up pair prompt becomes a problem row (``source`` "mixup"), or
carries ``reject``: GAL's parse stage (``gal_inputs``) under its own name, so the flow check and the audit name
the method, and the vote knows a mix-up problem by its ``source`` (its label is soft: ``mixup.py``)."""

from __future__ import annotations

from distill_ray.mixup import SOURCE
from distill_ray.stages import gal_inputs
from distill_ray.stages.base import BatchStage

READS, WRITES = gal_inputs.READS, gal_inputs.WRITES


def build() -> BatchStage:
    return gal_inputs.build("mixup_inputs", SOURCE)
