"""``train_on_policy``: start the samplers, teacher scorers and judge as Ray actors, run the per-worker loop
(``loop.py``) in a Ray Train ``TorchTrainer``, export the student, and stop the actors."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from distill_ray.config import OnPolicyConfig, VerifyConfig
from distill_ray.mlflow_log import mlflow_run
from distill_ray.onpolicy.actors import RolloutJudge, StudentSampler, TeacherScorer
from distill_ray.onpolicy.loop import on_policy_loop_per_worker
from distill_ray.train.config import TrainResult, TrainSettings
from distill_ray.train.trainer import (export_checkpoint, release_run_storage, run_config, scaling_config,
                                      write_result)

# The samplers' engine options under ``on_policy.sampler_options``: one thread each (the actor reserves
# ``actor_cpus``); vLLM in float32, the trainer's dtype (vLLM's CPU default, bfloat16, samples another model).
SAMPLER_DEFAULTS = {"hf": {"torch_threads": 1}, "vllm": {"dtype": "float32", "cpu_threads": 1, "kv_cache_gib": 1}}


@dataclass(frozen=True)
class ScoringTeacher:
    name: str
    model_dir: str        # a Hugging Face directory with the student's tokenizer
    weight: float = 1.0   # its share of the combined distribution (the vote's teacher weight)
    engine: str = "hf"    # what scores: hf or vllm
    options: dict | None = None   # the engine's keyword arguments


def train_on_policy(init_dir: str | Path, problems: list[dict], teachers: list[ScoringTeacher],
                    output_dir: str | Path, settings: TrainSettings, op: OnPolicyConfig,
                    verify: VerifyConfig | None = None) -> TrainResult:
    """On-policy distillation of the student in ``init_dir`` from ``teachers`` on ``problems`` (each a dict with
    ``student_prompt``, ``teacher_prompts`` (one per teacher, in order) and ``check``: the fields of its check
    plus ``response_prefix``); the student lands in ``output_dir``. Ray must already be initialised."""
    import ray

    init_dir, output_dir = Path(init_dir).resolve(), Path(output_dir).resolve()
    require_student_vocabulary(init_dir, teachers)
    if op.sampler_engine == "vllm":
        require_vllm()
    verify = verify or VerifyConfig()
    actor = ray.remote(num_cpus=op.actor_cpus)
    sampler_options = {**SAMPLER_DEFAULTS[op.sampler_engine], **op.sampler_options}
    actors = {
        "samplers": [actor(StudentSampler).remote(str(init_dir), op.sampler_engine, sampler_options)
                     for _ in range(op.samplers)],
        "scorers": [actor(TeacherScorer).remote(t.model_dir, t.engine, t.options or {"torch_threads": 1})
                    for t in teachers],
        "teacher_weights": [t.weight for t in teachers],
        "judge": actor(RolloutJudge).remote({"timeout_s": verify.timeout_s, "memory_mb": verify.memory_mb},
                                            verify.workers_per_actor),
    }
    with mlflow_run(settings.mlflow_uri, output_dir.name, {**settings.model_dump(), "on_policy": op.model_dump()}) \
            as tracking:
        trainer = _make_trainer(init_dir, problems, actors, output_dir, settings, op, tracking)
        started = time.perf_counter()
        try:
            result = trainer.fit()
        finally:
            _stop(actors)
        wall = time.perf_counter() - started
    export_checkpoint(result.checkpoint, init_dir, output_dir)
    train_result = write_result(result, init_dir, output_dir, settings, wall, on_policy=op.model_dump(),
                                teachers=[t.__dict__ for t in teachers])
    release_run_storage(settings, output_dir)
    return train_result


def require_student_vocabulary(student_dir: Path, teachers: list[ScoringTeacher]) -> None:
    """The teachers score the student's token ids: each must have the student's tokenizer."""
    from transformers import AutoTokenizer

    vocabulary = AutoTokenizer.from_pretrained(student_dir).get_vocab()
    for teacher in teachers:
        if AutoTokenizer.from_pretrained(teacher.model_dir).get_vocab() != vocabulary:
            raise ValueError(f"on-policy distillation scores the student's tokens with each teacher, but teacher "
                             f"{teacher.name!r} ({teacher.model_dir}) has another tokenizer than the student "
                             f"({student_dir}); use teachers with the student's tokenizer")


def require_vllm() -> None:
    """``sampler_engine: vllm`` needs vLLM in this interpreter or a ``.venv-vllm`` to run it from."""
    import importlib.util

    from distill_ray.teachers.vllm import MISSING, vllm_python

    if importlib.util.find_spec("vllm") is None and vllm_python() is None:
        raise ImportError(f"on_policy.sampler_engine: vllm: {MISSING}")


def _make_trainer(init_dir: Path, problems: list[dict], actors: dict, output_dir: Path, settings: TrainSettings,
                  op: OnPolicyConfig, tracking=None):
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        on_policy_loop_per_worker,
        train_loop_config={"init_dir": str(init_dir), "settings": settings.model_dump(), "on_policy": op.model_dump(),
                           "problems": problems, "actors": actors,
                           "torch_extensions_dir": os.environ.get("TORCH_EXTENSIONS_DIR")},
        scaling_config=scaling_config(settings),
        run_config=run_config(settings, output_dir, tracking),
    )


def _stop(actors: dict) -> None:
    import ray

    try:
        ray.get(actors["judge"].close.remote(), timeout=30)
    except Exception:   # a dead judge has nothing left to close
        pass
    for handle in [*actors["samplers"], *actors["scorers"], actors["judge"]]:
        ray.kill(handle)
