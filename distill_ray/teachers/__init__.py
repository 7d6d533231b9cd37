"""Teacher engines: one interface (``render`` + ``generate`` + ``provenance``), chosen by config.

``hf``: transformers generation (CPU or GPU). ``openai``: any OpenAI-compatible server. ``vllm``: vLLM's
offline ``LLM`` (GPU extra). ``replay``: a benchmark engine with no model, serving recorded completions or the
problems' references (it measures the pipeline's own overhead). Engines are imported on first use, so a missing
optional package (vllm, openai) only matters to the engine that needs it.
"""

from distill_ray.teachers.base import Batch, BatchStats, Generation, SamplingSettings, TeacherEngine

ENGINES = ("hf", "openai", "vllm", "replay")


def make_engine(engine: str, model: str, **options) -> TeacherEngine:
    """Build the engine named by config; ``options`` are that engine's keyword arguments."""
    if engine == "hf":
        from distill_ray.teachers.hf import HFEngine

        return HFEngine(model, **options)
    if engine == "openai":
        from distill_ray.teachers.openai_api import OpenAIEngine

        return OpenAIEngine(model, **options)
    if engine == "vllm":
        from distill_ray.teachers.vllm import VLLMEngine

        return VLLMEngine(model, **options)
    if engine == "replay":
        from distill_ray.teachers.replay import ReplayEngine

        return ReplayEngine(model, **options)
    raise ValueError(f"unknown teacher engine {engine!r} (available: {', '.join(ENGINES)})")


def __getattr__(name: str):
    # ``from distill_ray.teachers import HFEngine`` keeps working without importing torch for the others.
    if name == "HFEngine":
        from distill_ray.teachers.hf import HFEngine

        return HFEngine
    raise AttributeError(name)


__all__ = ["Batch", "BatchStats", "ENGINES", "Generation", "HFEngine", "SamplingSettings", "TeacherEngine",
           "make_engine"]
