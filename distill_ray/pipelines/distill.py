"""The distillation pipeline, one row per problem until the teachers, then one row per candidate:

    problem columns -> prompt -> [teacher A | teacher B | ...] -> extract -> verify (-> critic) -> vote -> Parquet

Each teacher is its own actor pool (its own model, prompt style and sampling); the branches share the
prompt stage's chat messages and their candidate rows are unioned, each labelled with its ``teacher``.
Evaluation runs the same list without the vote. To add a stage: write its module in ``stages/`` and put it in
the list here; the flow check, the output schema and the README's stage table follow from its declarations.
"""

from __future__ import annotations

from distill_ray.config import PromptConfig, TeacherConfig, VerifyConfig, VoteConfig
from distill_ray.critic import Critic
from distill_ray.prompts import Exemplar
from distill_ray.stages import Columns, Stage, check_flow, critic, extract, prompt, teacher, verify, vote
from distill_ray.tasks.schema import PROBLEM_COLUMNS


def distill_stages(teachers: list[TeacherConfig], prompt_cfg: PromptConfig, verify_cfg: VerifyConfig,
                   exemplars: list[Exemplar], seed: int, vote_cfg: VoteConfig | None = None,
                   sampling_seed: int | None = None, critic_model: Critic | None = None,
                   resample_rounds: int = 0) -> list[Stage]:
    """prompt -> teachers -> extract -> verify (-> the critic, given one), then the vote when ``vote_cfg`` is
    given (the training dataset; evaluation has none). ``seed`` draws the exemplars; ``sampling_seed`` (default
    ``seed``) the samples; ``resample_rounds`` > 0 (with a critic): the teachers sample again what it rejects."""
    resample = None
    if critic_model is not None and resample_rounds:
        resample = dict(weights=critic_model.weights, threshold=critic_model.threshold, rounds=resample_rounds)
    stages = [prompt.build(prompt_cfg, exemplars, seed),
              teacher.build(teachers, seed if sampling_seed is None else sampling_seed, resample),
              extract.build(),
              verify.build(verify_cfg)]
    if critic_model is not None:
        stages.append(critic.build(critic_model))
    return stages + [vote.build(vote_cfg, teachers, critic=critic_model is not None)] if vote_cfg else stages


def output_columns(stages: list[Stage]) -> Columns:
    """Every column a run of ``stages`` over the problems writes, with its Arrow type (the Parquet schema)."""
    return check_flow(PROBLEM_COLUMNS, stages)
