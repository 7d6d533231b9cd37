"""Teacher engines: one interface (``render`` + ``generate``), chosen by config.

``hf`` is transformers generation (CPU or GPU). vLLM and OpenAI-compatible engines plug in behind the
same interface (issue 4).
"""

from distill_ray.teachers.base import Generation, SamplingSettings, TeacherEngine
from distill_ray.teachers.hf import HFEngine


def make_engine(engine: str, model: str, **options) -> TeacherEngine:
    """Build the engine named by config (``hf``)."""
    if engine == "hf":
        return HFEngine(model, **options)
    raise ValueError(f"unknown teacher engine {engine!r} (available: 'hf')")


__all__ = ["Generation", "HFEngine", "SamplingSettings", "TeacherEngine", "make_engine"]
