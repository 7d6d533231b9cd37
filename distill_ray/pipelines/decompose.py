"""The decompositional distillation recipe: the distillation pipeline with the decomposition's prompt opening, and
(for the training dataset) each verified decomposition cut into decomposer and solver targets before the vote:

    problem columns -> prompt -> decompose_prefix -> [teachers] -> extract -> verify -> decompose_split -> vote

Evaluation runs it without the split and the vote: the decomposer and the single student with
``DECOMPOSE_PREFIX``, the solver with ``SOLVER_PREFIX`` over questions that carry the decomposer's sub-questions.
"""

from __future__ import annotations

from distill_ray.config import PromptConfig, TeacherConfig, VerifyConfig, VoteConfig
from distill_ray.decomposition import DECOMPOSE_PREFIX
from distill_ray.pipelines.distill import distill_stages
from distill_ray.prompts import Exemplar
from distill_ray.stages import Stage, decompose, vote


def decompose_stages(teachers: list[TeacherConfig], prompt_cfg: PromptConfig, verify_cfg: VerifyConfig,
                     exemplars: list[Exemplar], seed: int, vote_cfg: VoteConfig | None = None,
                     sampling_seed: int | None = None, prefix: str = DECOMPOSE_PREFIX, min_steps: int = 2,
                     **_unused) -> list[Stage]:
    """``distill_stages``' signature (``workflow.sample_problems`` builds either; critic options are not used here),
    plus the prompt's opening and the fewest sub-questions a training row needs."""
    stages = distill_stages(teachers, prompt_cfg, verify_cfg, exemplars, seed, sampling_seed=sampling_seed)
    stages.insert(1, decompose.build_prefix(prefix))
    if vote_cfg is None:
        return stages
    return stages + [decompose.build_split(min_steps), vote.build(vote_cfg, teachers)]
