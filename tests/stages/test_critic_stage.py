"""The critic in a real generate job (SmolLM2 on GSM8K questions, some without their answer): the teacher samples
again what it rejects (one round), every candidate is scored, and where no verifier decides, a candidate the
critic rejects neither votes nor is kept."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from distill_ray.config import load_config
from distill_ray.critic import Critic
from tests.conftest import REPO
from tests.stages.test_multi_teacher import LABELLED, POOL, UNLABELLED, gsm8k_jsonl


def critic_at(path, seed: int) -> Critic:
    """A critic with random weights (its verdicts vary from row to row, which is all this test needs)."""
    critic = Critic(np.random.default_rng(seed).normal(size=1 << 10).astype(np.float32), threshold=0.5)
    critic.save(path, {"note": "random weights, for a test"})
    return critic


@pytest.mark.slow
def test_generate_scores_every_candidate_and_the_vote_drops_what_the_critic_rejects(ray_cluster, tmp_path,
                                                                                     shared_data):
    from distill_ray import workflow

    task_file = gsm8k_jsonl(shared_data, tmp_path / "gsm8k.jsonl")
    critic = critic_at(tmp_path / "critic", seed=0)
    settings = [f"output_dir={tmp_path / 'run'}", "task.source=jsonl", f"task.path={task_file}",
                f"task.num_train={LABELLED + UNLABELLED}", "task.num_eval=1", f"prompt.pool_size={POOL}",
                f"prompt.num_shots={POOL}", "teacher.samples=4", "teacher.max_new_tokens=48",
                "teacher.torch_threads=1", "verify.workers_per_actor=1", f"critic.path={tmp_path / 'critic'}",
                "critic.resample_rounds=1"]
    workflow.generate(load_config(REPO / "configs" / "demo.yaml", settings))
    rows = pq.read_table(tmp_path / "run" / "dataset").to_pandas()

    np.testing.assert_allclose(rows["critic_score"], critic.score(rows), atol=1e-9)
    assert rows["critic_accept"].equals(rows["critic_score"] >= 0.5)
    assert rows["critic_accept"].nunique() == 2
    assert all(sorted(g) == [0, 1, 2, 3] for _, g in rows.groupby("task_id")["sample_index"])
    # one round: a slot the critic accepted at once took one generation, any other two
    assert set(rows["attempts"]) == {1, 2} and rows.loc[rows["attempts"] == 1, "critic_accept"].all()
    unlabelled = rows["expected"].isna()
    assert unlabelled.any() and (~unlabelled).any()
    # where no verifier decides: rejected rows abstain (not in the label distribution's counts) and are not kept
    rejected = unlabelled & ~rows["critic_accept"] & rows["answer"].notna()
    assert rejected.any() and not (rows["keep"] & unlabelled & ~rows["critic_accept"]).any()
    for _, task in rows[unlabelled].groupby("task_id"):
        counts = json.loads(task["teacher_counts"].iloc[0]).get("smollm2", {})
        voters = task[task["critic_accept"] & task["answer"].notna()]
        assert sum(counts.values()) == len(voters)
    # where the verifier decides, it alone does
    labelled = rows[~unlabelled]
    assert labelled["keep"].equals(labelled["passed"].astype(bool) & ~labelled["duplicate"])

    critic_at(tmp_path / "critic", seed=1)   # other weights at the same path: other rows, so no silent resume
    with pytest.raises(ValueError, match="other parameters"):
        workflow.generate(load_config(REPO / "configs" / "demo.yaml", settings))
