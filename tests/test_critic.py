"""The correctness critic (distill_ray/critic.py): its metrics on hand-computed cases, its splits, that it learns
a learnable verdict and cannot fake one it cannot learn, and `distill-ray critic` on a dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from distill_ray import cli
from distill_ray.critic import (MAX_PROGRAM_CHARS, Critic, auc, evaluate, features, split_of,
                                threshold_for_precision, train_critic)
from distill_ray.shards import ShardSet


def test_auc_on_hand_computed_cases():
    labels = np.array([True, True, False, False])
    assert auc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 1.0
    assert auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 0.0
    assert auc(np.array([0.5, 0.5, 0.5, 0.5]), labels) == 0.5
    assert auc(np.array([0.9, 0.3, 0.5, 0.1]), labels) == 0.75    # 3 of the 4 (pass, fail) pairs ordered right
    assert auc(np.array([0.9, 0.8]), np.array([True, True])) is None


def test_threshold_takes_the_most_recall_at_the_precision():
    scores, labels = np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([True, True, False, True, False])
    assert threshold_for_precision(scores, labels, 1.0) == 0.8     # top two: 2/2
    assert threshold_for_precision(scores, labels, 0.75) == 0.6    # top four: 3/4
    assert threshold_for_precision(scores, labels, 0.5) == 0.6     # 0.5 would add a failing row, no passing one
    # a tie is never split: accepting 0.7 accepts both 0.7s, 2 of 3 right
    tied = np.array([0.9, 0.7, 0.7, 0.1]), np.array([True, True, False, False])
    assert threshold_for_precision(*tied, 0.6) == 0.7
    assert threshold_for_precision(*tied, 0.7) == 0.9
    # below the last passing row only failing ones are added: the threshold stays above them
    assert threshold_for_precision(np.array([0.9, 0.8, 0.3, 0.2]), np.array([True] * 2 + [False] * 2), 0.5) == 0.8
    # no threshold reaches it: the best precision there is
    assert threshold_for_precision(np.array([0.9, 0.8]), np.array([False, True]), 0.99) == 0.8


def test_evaluate_measures_precision_recall_and_reranking():
    scores = np.array([0.9, 0.2, 0.4, 0.3, 0.8, 0.7])
    labels = np.array([True, False, False, True, False, False])
    report = evaluate(scores, labels, pd.Series(["a", "a", "b", "b", "c", "c"]), threshold=0.35)
    assert report["accepted"] == 4 and report["precision"] == 0.25 and report["recall"] == 0.5
    # top-scored per problem: a's 0.9 (pass), b's 0.4 (fail), c's 0.8 (fail)
    assert report["rerank_top1_pass"] == round(1 / 3, 4)
    assert report["random_pick_pass"] == round((0.5 + 0.5 + 0) / 3, 4) and report["any_pass"] == round(2 / 3, 4)


def test_a_problem_is_in_one_split_and_the_shares_follow_held_out():
    parts = pd.Series([split_of(f"task-{i}", 0.4) for i in range(4000)])
    assert all(split_of(f"task-{i}", 0.4) == parts[i] for i in range(0, 4000, 97))   # stable
    shares = parts.value_counts(normalize=True)
    assert abs(shares["train"] - 0.6) < 0.03 and abs(shares["calibrate"] - 0.2) < 0.03


def test_features_read_a_huge_program_only_so_far():
    ids, values = features("x = 1\n" * 1_000_000, "def sat(x): return x", True, bits=16)
    assert len(ids) == len(set(ids.tolist())) and (values > 0).all()
    small, _ = features("x = 1\n" * (MAX_PROGRAM_CHARS // 6), "def sat(x): return x", True, bits=16)
    assert set(ids.tolist()) == set(small.tolist())
    assert features(None, None, False, bits=8)[0].max() < 256


def candidates(n_tasks: int, learnable: bool, seed: int = 0) -> pd.DataFrame:
    """Synthetic verified rows: four candidates per problem; a candidate passes where its program returns
    ``x + 1`` (learnable) or by a coin flip (nothing in the text says)."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_tasks):
        for s in range(4):
            good = rng.random() < 0.4
            filler = " ".join(f"v{rng.integers(50)}" for _ in range(5))
            program = f"def sol(x):\n    y = {filler}\n    return x + {1 if good else rng.integers(2, 9)}\n"
            rows.append({"task_id": f"t{t}", "program": program, "sat": f"def sat(y, x={t}): return y == x + 1",
                         "question": None, "finished": True,
                         "passed": good if learnable else bool(rng.random() < 0.4), "status": "pass"})
    frame = pd.DataFrame(rows)
    frame.loc[~frame["passed"], "status"] = "fail"
    return frame


def test_the_critic_learns_a_verdict_its_text_shows_and_reaches_the_target_precision_held_out():
    critic, report = train_critic(candidates(300, learnable=True), target_precision=0.9, held_out=0.4,
                                  bits=14, l2=1e-3)
    test = report["test"]
    assert test["auc"] > 0.95 and test["precision"] >= 0.9 and test["recall"] > 0.5
    assert test["rerank_top1_pass"] > test["random_pick_pass"] + 0.2
    assert report["train_rows"] + report["calibrate"]["rows"] + test["rows"] == 1200


def test_the_critic_cannot_fake_a_verdict_its_text_does_not_show():
    """Labels drawn by coin flip: whatever it memorises of the training problems, held out it is a guess."""
    _, report = train_critic(candidates(300, learnable=False), target_precision=0.9, held_out=0.4,
                             bits=14, l2=1e-3)
    assert 0.35 < report["test"]["auc"] < 0.65


def test_unlabelled_rows_are_neither_trained_on_nor_reported():
    rows = candidates(100, learnable=True)
    rows.loc[rows.index % 2 == 0, "status"] = "answered"
    _, report = train_critic(rows, 0.9, 0.4, 12, 1e-3)
    assert report["train_rows"] + report["calibrate"]["rows"] + report["test"]["rows"] == 200


def test_too_little_data_is_a_clear_error():
    with pytest.raises(ValueError, match="too few verified rows"):
        train_critic(candidates(2, learnable=True), 0.9, 0.4, 12, 1e-3)


def test_cli_trains_saves_and_the_saved_critic_scores_the_same(tmp_path):
    rows = candidates(200, learnable=True)
    shards = ShardSet(tmp_path / "dataset")
    for chunk, start in enumerate(range(0, len(rows), 300)):
        shards.write(chunk, pa.Table.from_pandas(rows.iloc[start:start + 300].reset_index(drop=True)))
    out = tmp_path / "critic"
    assert cli.main(["critic", "--dataset", str(tmp_path / "dataset"), "--out", str(out),
                     "--set", "critic.hash_bits=14"]) == 0
    report = json.loads((out / "critic.json").read_text())
    assert report["test"]["precision"] >= 0.9
    critic = Critic.load(out)
    assert critic.threshold == pytest.approx(report["threshold"], abs=1e-4) and critic.bits == 14
    retrained, _ = train_critic(rows, 0.9, 0.4, 14, 1e-3)
    np.testing.assert_allclose(critic.score(rows), retrained.score(rows), atol=1e-6)
    other = Critic(critic.weights, critic.threshold + 0.01)
    assert other.digest() != critic.digest() == Critic.load(out).digest()
    with pytest.raises(FileNotFoundError, match="distill-ray critic"):
        Critic.load(tmp_path / "nowhere")


def test_the_critics_pick_is_each_problems_top_scored_sample():
    from distill_ray.workflow import critic_pick

    rows = pd.DataFrame({"task_id": ["a", "a", "a", "b", "b", "c"], "sample_index": [0, 1, 2, 0, 1, 0],
                         "critic_score": [0.2, 0.9, 0.9, 0.7, 0.1, 0.5],
                         "passed": [True, False, True, False, True, True]})
    # a: 0.9 twice -> the first (sample 1, fails); b: sample 0 (fails); c: its only sample (passes)
    assert critic_pick(rows) == {"mean": pytest.approx(1 / 3), "problems": 3}


def test_the_report_shows_the_critics_pick_beside_pass_at_k():
    from distill_ray.evaluate.report import render_markdown

    entry = {"problems": 2, "samples": 8, "correct": 3, "pass@1": {"mean": 0.375, "ci95": [0.1, 0.6], "problems": 2}}
    plain = render_markdown({"name": "r", "eval_k": [1], "evaluation": {"teacher": entry}})
    assert "critic's pick" not in plain
    with_critic = render_markdown({"name": "r", "eval_k": [1],
                                   "evaluation": {"teacher": {**entry, "critic@1": {"mean": 0.5, "problems": 2}}}})
    header, _, row = [line for line in with_critic.splitlines() if line.startswith("|")][:3]
    assert header.endswith("| critic's pick passes |") and row.endswith("| 0.500 |")
