"""The critic in a generate job on Ray (GSM8K questions, some without their answer; the replay engine serves
their reference programs and, for half the samples, another question's, so every candidate has an answer): the
teacher samples again what the critic rejects (one round), every candidate is scored, and where no verifier
decides, a candidate the critic rejects neither votes nor is kept."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from distill_ray.config import load_config
from distill_ray.critic import Critic
from tests.stages.test_multi_teacher import LABELLED, POOL, UNLABELLED, gsm8k_jsonl


def critic_at(path, seed: int) -> Critic:
    """A critic with random weights (its verdicts vary from row to row, which is all this test needs), strict
    enough that some candidates stay rejected after a second try."""
    critic = Critic(np.random.default_rng(seed).normal(size=1 << 10).astype(np.float32), threshold=0.95)
    critic.save(path, {"note": "random weights, for a test"})
    return critic


@pytest.mark.slow
def test_generate_scores_every_candidate_and_the_vote_drops_what_the_critic_rejects(ray_cluster, tmp_path,
                                                                                     shared_data):
    from distill_ray import workflow

    task_file = gsm8k_jsonl(shared_data, tmp_path / "gsm8k.jsonl")
    critic = critic_at(tmp_path / "critic", seed=0)
    task = {"source": "jsonl", "path": str(task_file), "num_train": LABELLED + UNLABELLED, "num_eval": 1}
    replay = dict(task=task, task_seed=0, pool_size=POOL, wrong_fraction=0.5)
    settings = [f"output_dir={tmp_path / 'run'}", f"task={json.dumps(task)}", f"prompt.pool_size={POOL}",
                f"prompt.num_shots={POOL}", "teacher.engine=replay", "teacher.model=references",
                "teacher.samples=4", f"teacher.engine_options={json.dumps(replay)}", "verify.workers_per_actor=1",
                f"critic.path={tmp_path / 'critic'}", "critic.resample_rounds=1"]
    workflow.generate(load_config(None, settings))
    rows = pq.read_table(tmp_path / "run" / "dataset").to_pandas()

    np.testing.assert_allclose(rows["critic_score"], critic.score(rows), atol=1e-9)
    assert rows["critic_accept"].equals(rows["critic_score"] >= critic.threshold)
    assert rows["critic_accept"].nunique() == 2
    assert all(sorted(g) == [0, 1, 2, 3] for _, g in rows.groupby("task_id")["sample_index"])
    # one round: a slot the critic accepted at once took one generation, any other two
    assert set(rows["attempts"]) == {1, 2} and rows.loc[rows["attempts"] == 1, "critic_accept"].all()
    unlabelled = rows["expected"].isna()
    assert unlabelled.any() and (~unlabelled).any()
    # where no verifier decides: rejected rows abstain (not in the label distribution's counts) and are not kept
    rejected = unlabelled & ~rows["critic_accept"] & rows["answer"].notna()
    assert rejected.any() and not (rows["keep"] & unlabelled & ~rows["critic_accept"]).any()
    assert (rows["keep"] & unlabelled).any()                       # what it accepts does vote and is kept
    for _, problem in rows[unlabelled].groupby("task_id"):
        counts = json.loads(problem["teacher_counts"].iloc[0]).get("smollm2", {})
        voters = problem[problem["critic_accept"] & problem["answer"].notna()]
        assert sum(counts.values()) == len(voters)
    # where the verifier decides, it alone does
    labelled = rows[~unlabelled]
    assert labelled["keep"].equals(labelled["passed"].astype(bool) & ~labelled["duplicate"])

    critic_at(tmp_path / "critic", seed=1)   # other weights at the same path: other rows, so no silent resume
    with pytest.raises(ValueError, match="other parameters"):
        workflow.generate(load_config(None, settings))
