"""Critic-guided resampling, inside a teacher actor: the candidates the critic rejects are sampled again.

CodeRL regenerates the programs its critic rejects; here each rejected candidate slot of a batch is sampled
again (a fresh seed per round; a prompt's rejected slots in one request, sharing its prefill), up to ``rounds``
times, and keeps its best-scored attempt; it stops at the first one the critic accepts. The slot keeps its
``sample_index``, so a prompt still has exactly ``samples`` rows (the sink counts on it), and ``attempts``
records how many generations it took.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from distill_ray.critic import Critic
from distill_ray.stages.extract import extract_programs
from distill_ray.teachers.provenance import candidate_columns

SEED_STRIDE = 1_000_003   # round r samples with seed + r * SEED_STRIDE: never a seed of the first pass


class Resampler:
    def __init__(self, weights, threshold: float, rounds: int):
        self.critic, self.rounds = Critic(weights, threshold), rounds

    def scores(self, rows: pd.DataFrame) -> np.ndarray:
        return self.critic.score(extract_programs(rows.copy()))   # the program the extract stage will find

    def __call__(self, engine, rows: pd.DataFrame, prompts: list[str], sampling) -> pd.DataFrame:
        """``rows``: a batch's candidates, prompt-major (``sampling.n`` per prompt in ``prompts``)."""
        rows = rows.assign(attempts=1)
        prompt_of = np.repeat(np.arange(len(prompts)), sampling.n)
        score = self.scores(rows)
        for r in range(1, self.rounds + 1):
            todo = np.flatnonzero(score < self.critic.threshold)
            if not len(todo):
                break
            slots, fresh = self.sample_again(engine, rows, todo, prompt_of, prompts,
                                             replace(sampling, seed=sampling.seed + r * SEED_STRIDE))
            fresh_score = self.scores(fresh)
            better = fresh_score > score[slots]
            for column in fresh.columns.difference(["sample_index"], sort=False):
                rows.iloc[slots[better], rows.columns.get_loc(column)] = fresh[column].to_numpy()[better]
            score[slots[better]] = fresh_score[better]
            rows.iloc[todo, rows.columns.get_loc("attempts")] = r + 1
        return rows

    @staticmethod
    def sample_again(engine, rows, todo, prompt_of, prompts, sampling) -> tuple[np.ndarray, pd.DataFrame]:
        """(slots, a fresh candidate for each): one request per prompt for all its rejected slots (they share
        its prefill), one generate call per distinct number of them."""
        by_prompt: dict[int, list[int]] = {}
        for slot in todo:
            by_prompt.setdefault(int(prompt_of[slot]), []).append(int(slot))
        by_count: dict[int, list[int]] = {}
        for prompt, slots in by_prompt.items():
            by_count.setdefault(len(slots), []).append(prompt)
        order, parts = [], []
        for k, group in sorted(by_count.items()):
            again = replace(sampling, n=k)
            texts = [prompts[i] for i in group]
            parts.append(pd.DataFrame(candidate_columns(texts, engine.generate(texts, again), again,
                                                        engine.provenance())))
            order += [slot for i in group for slot in by_prompt[i]]   # prompt-major, as candidate_columns
        slots = np.array(order)
        fresh = pd.concat(parts, ignore_index=True).drop(columns="sample_index")
        return slots, rows.iloc[slots].reset_index(drop=True).assign(**{c: fresh[c].to_numpy() for c in fresh})
