"""critic: every candidate's probability of passing, from a critic trained on the verifier's verdicts
(``distill_ray/critic.py``, trained by ``distill-ray critic``), and whether it clears the critic's threshold.

Scores rank a prompt's candidates; where no verifier can decide (unlabelled gsm8k), the vote counts and keeps
only the candidates the critic accepts. Where the verifier decides, its verdict wins and the score is recorded.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from distill_ray.critic import Critic
from distill_ray.stages.base import LIGHT_TASK, BatchStage

READS = ("program", "sat", "question", "finished")
WRITES = {"critic_score": pa.float64(), "critic_accept": pa.bool_()}


def score_candidates(batch: pd.DataFrame, weights, threshold: float) -> pd.DataFrame:
    critic = Critic(weights, threshold)
    batch["critic_score"] = critic.score(batch)
    batch["critic_accept"] = batch["critic_score"] >= threshold
    return batch


def build(critic: Critic) -> BatchStage:
    return BatchStage("critic", reads=READS, writes=WRITES, fn=score_candidates, cpus=LIGHT_TASK,
                      fn_kwargs=dict(weights=critic.weights, threshold=critic.threshold))
