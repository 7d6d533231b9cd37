"""Critic-guided resampling, inside a teacher actor: the candidates the critic rejects are sampled again.

CodeRL regenerates the programs its critic rejects; here each rejected candidate slot of a batch is sampled
again (one sample per slot, a fresh seed per round), up to ``rounds`` times, and keeps its best-scored attempt;
it stops at the first one the critic accepts. The slot keeps its ``sample_index``, so a prompt still has exactly
``samples`` rows (the sink counts on it), and ``attempts`` records how many generations it took.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from distill_ray.critic import Critic
from distill_ray.extract import extract_program
from distill_ray.teachers.provenance import candidate_columns

SEED_STRIDE = 1_000_003   # round r samples with seed + r * SEED_STRIDE: never a seed of the first pass


class Resampler:
    def __init__(self, weights, threshold: float, rounds: int):
        self.critic, self.rounds = Critic(weights, threshold), rounds

    def scores(self, rows: pd.DataFrame) -> np.ndarray:
        programs = [extract_program(p, c, k) for p, c, k in zip(rows["response_prefix"], rows["completion"],
                                                                 rows["kind"])]
        return self.critic.score(rows.assign(program=programs))

    def __call__(self, engine, rows: pd.DataFrame, prompts: list[str], sampling) -> pd.DataFrame:
        """``rows``: a batch's candidates, prompt-major (``sampling.n`` per prompt in ``prompts``)."""
        rows = rows.assign(attempts=1)
        prompt_of = np.repeat(np.arange(len(prompts)), sampling.n)
        score = self.scores(rows)
        for r in range(1, self.rounds + 1):
            todo = np.flatnonzero(score < self.critic.threshold)
            if not len(todo):
                break
            again = replace(sampling, n=1, seed=sampling.seed + r * SEED_STRIDE)
            slot_prompts = [prompts[prompt_of[i]] for i in todo]
            fresh = rows.iloc[todo].copy()
            columns = candidate_columns(slot_prompts, engine.generate(slot_prompts, again), again,
                                        engine.provenance())
            columns.pop("sample_index")   # the slot keeps its own
            for column, values in columns.items():
                fresh[column] = values
            fresh_score = self.scores(fresh)
            better = fresh_score > score[todo]
            for column in columns:
                rows.iloc[todo[better], rows.columns.get_loc(column)] = fresh[column].to_numpy()[better]
            score[todo[better]] = fresh_score[better]
            rows.iloc[todo, rows.columns.get_loc("attempts")] = r + 1
        return rows
