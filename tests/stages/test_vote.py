"""Voting, with hand-worked examples: every expected number below is computed by hand in the comment."""

import json

import numpy as np
import pandas as pd
import pytest

from distill_ray.stages.vote import vote_group


def group(samples: dict[str, list], kind="gsm8k", expected=None, passed=None, programs=None):
    """Rows of one task: {teacher: [answer, ...]}; ``passed`` per teacher as a list of bools."""
    rows = []
    for teacher, answers in samples.items():
        for i, answer in enumerate(answers):
            rows.append({"task_id": "t", "teacher": teacher, "sample_index": i, "kind": kind, "expected": expected,
                         "answer": answer, "passed": (passed or {}).get(teacher, [False] * len(answers))[i]})
    frame = pd.DataFrame(rows)
    frame["program"] = programs or [f"def solution():\n    return {j}\n" for j in range(len(rows))]
    return frame


def approx(values):
    return [pytest.approx(v) for v in values]


def test_one_teacher_unanimous_verified_samples_are_hard_labels():
    out = vote_group(group({"a": ["12", "12", "12"]}, expected=12.0, passed={"a": [True] * 3}))
    assert out["agreement"].all() and out["vote_answer"].eq("12").all()
    assert out["answer_share"].eq(1.0).all() and out["keep"].all()
    assert out["label_type"].eq("hard").all() and out["label_weight"].eq(1.0).all()


def test_one_teacher_split_votes_disagree_and_the_verdict_decides_what_is_kept():
    # shares over the 3 answered samples: 12 -> 2/3, 7 -> 1/3; the sample without an answer abstains
    out = vote_group(group({"a": ["12", "12", "7", None]}, expected=12.0, passed={"a": [True, True, False, False]}))
    assert not out["agreement"].any()
    assert out["vote_answer"].iloc[0] == "12" and out["vote_share"].iloc[0] == pytest.approx(2 / 3)
    assert list(out["answer_share"]) == approx([2 / 3, 2 / 3, 1 / 3, 0.0])
    assert list(out["keep"]) == [True, True, False, False]
    assert list(out["label_weight"]) == [1.0, 1.0, 0.0, 0.0] and out["label_type"].eq("hard").all()


def test_unlabelled_teachers_whose_majorities_agree_give_a_hard_label():
    # a: 5,5,6 (majority 5); b: 5,5,7 (majority 5) -> agreement on 5.
    # distribution = mean of the teachers' own: 5 -> (2/3 + 2/3) / 2 = 2/3, 6 -> 1/6, 7 -> 1/6
    out = vote_group(group({"a": ["5", "5", "6"], "b": ["5", "5", "7"]}))
    assert out["agreement"].all() and out["vote_answer"].eq("5").all()
    assert json.loads(out["label_distribution"].iloc[0]) == {"5": pytest.approx(2 / 3), "6": pytest.approx(1 / 6),
                                                             "7": pytest.approx(1 / 6)}
    assert json.loads(out["teacher_counts"].iloc[0]) == {"a": {"5": 2, "6": 1}, "b": {"5": 2, "7": 1}}
    assert list(out["keep"]) == [True, True, False, True, True, False]  # only the agreed answer is the label
    assert list(out["label_weight"]) == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0] and out["label_type"].eq("hard").all()
    assert not out["passed"].any()  # no verdict without an expected answer


def test_unlabelled_teachers_that_disagree_give_a_weighted_soft_label():
    # a (weight 3): 5,5,6 -> 5: 2/3, 6: 1/3;  b (weight 1): 8,8 -> 8: 1.
    # soft label: 5 -> 3*(2/3)/4 = 1/2, 6 -> 3*(1/3)/4 = 1/4, 8 -> 1*1/4 = 1/4
    out = vote_group(group({"a": ["5", "5", "6"], "b": ["8", "8"]}), weights={"a": 3.0, "b": 1.0})
    assert not out["agreement"].any() and out["label_type"].eq("soft").all()
    assert out["vote_answer"].iloc[0] == "5" and out["vote_share"].iloc[0] == pytest.approx(0.5)
    assert list(out["label_weight"]) == approx([0.5, 0.5, 0.25, 0.25, 0.25]) and out["keep"].all()
    # equal weights: 5 -> 1/3, 6 -> 1/6, 8 -> 1/2: the vote flips to b's answer
    even = vote_group(group({"a": ["5", "5", "6"], "b": ["8", "8"]}))
    assert even["vote_answer"].iloc[0] == "8" and list(even["label_weight"]) == approx([1 / 3, 1 / 3, 1 / 6, 0.5, 0.5])


def test_verified_correctness_wins_over_the_votes():
    # expected 4: both teachers' majorities are wrong (3 and 9), the one verified sample is the label
    out = vote_group(group({"a": ["3", "3", "3"], "b": ["4", "9", "9"]}, expected=4.0,
                           passed={"b": [True, False, False]}))
    assert not out["agreement"].any() and out["vote_answer"].iloc[0] == "3"
    assert list(out["keep"]) == [False, False, False, True, False, False]
    assert out.loc[out["keep"], "label_type"].eq("hard").all() and out.loc[out["keep"], "label_weight"].eq(1.0).all()


def test_puzzle_samples_vote_verified_or_not():
    # a: 2 of 3 verified (majority "verified"); b: 1 of 3 (majority "not verified") -> disagreement;
    # verified share = (2/3 + 1/3) / 2 = 1/2
    out = vote_group(group({"a": ["1", "2", "x"], "b": ["3", "y", "z"]}, kind="p3",
                           passed={"a": [True, True, False], "b": [True, False, False]}))
    assert not out["agreement"].any()
    assert json.loads(out["teacher_counts"].iloc[0]) == {"a": {"not verified": 1, "verified": 2},
                                                         "b": {"not verified": 2, "verified": 1}}
    assert json.loads(out["label_distribution"].iloc[0]) == {"not verified": 0.5, "verified": 0.5}
    assert list(out["keep"]) == [True, True, False, True, False, False]  # the verified ones, as hard labels


def test_a_silent_teacher_abstains_and_a_tied_teacher_has_no_majority():
    silent = vote_group(group({"a": ["5", "5"], "b": [None, None]}))
    assert silent["agreement"].all() and silent["vote_answer"].eq("5").all()
    assert json.loads(silent["teacher_counts"].iloc[0]) == {"a": {"5": 2}, "b": {}}
    tied = vote_group(group({"a": ["5", "6"], "b": ["5", "5"]}))
    assert not tied["agreement"].any() and tied["label_type"].eq("soft").all()


def test_duplicates_are_kept_once():
    programs = ["def sol():\n    return 1\n", "def sol():\n    return  1\n", "def sol():\n    return 2\n"]
    out = vote_group(group({"a": ["1", "1", "2"]}, kind="p3", passed={"a": [True] * 3}, programs=programs))
    assert list(out["duplicate"]) == [False, True, False]
    assert list(out["keep"]) == [True, False, True] and list(out["label_weight"]) == [1.0, 0.0, 1.0]


def test_require_majority_drops_minority_answers():
    out = vote_group(group({"a": ["5", "5", "6"]}, expected=5.0, passed={"a": [True, True, False]}),
                     require_majority=True)
    assert list(out["keep"]) == [True, True, False]
    soft = vote_group(group({"a": ["5", "5", "6"], "b": ["6", "6"]}), require_majority=True)
    # soft label 5 -> 1/3, 6 -> 2/3: only the winner's rows stay
    assert soft["vote_answer"].iloc[0] == "6" and list(soft["keep"]) == [False, False, True, True, True]


def test_no_answers_at_all():
    out = vote_group(group({"a": [None, None]}))
    assert out["vote_answer"].isna().all() and not out["keep"].any() and out["vote_share"].eq(0).all()
    assert json.loads(out["label_distribution"].iloc[0]) == {}


def test_a_candidate_the_critic_rejects_abstains_where_no_verifier_decides():
    # unlabelled: 5, 5 (rejected), 6 -> the voters are 5 and 6: no agreement, shares 1/2 each; the rejected 5 is
    # not kept, whatever its answer's share
    rows = group({"a": ["5", "5", "6"]}).assign(critic_accept=[True, False, True])
    out = vote_group(rows)
    assert not out["agreement"].any()
    assert json.loads(out["label_distribution"].iloc[0]) == {"5": 0.5, "6": 0.5}
    assert list(out["keep"]) == [True, False, True] and list(out["label_weight"]) == [0.5, 0.0, 0.5]
    # without the critic: 5 has 2 of 3 votes (one teacher agrees only when unanimous): shares 2/3, 1/3
    plain = vote_group(group({"a": ["5", "5", "6"]}))
    assert list(plain["label_weight"]) == approx([2 / 3, 2 / 3, 1 / 3]) and plain["keep"].all()


def test_where_the_verifier_decides_the_critic_changes_nothing():
    labelled = group({"a": ["12", "12", "7"]}, expected=12.0, passed={"a": [True, True, False]})
    out = vote_group(labelled.assign(critic_accept=[False, True, True]))
    pd.testing.assert_frame_equal(out.drop(columns="critic_accept"), vote_group(labelled))


def random_candidates(seed: int, tasks: int = 60) -> pd.DataFrame:
    """Candidates of puzzles, labelled and unlabelled GSM8K, from 1-3 teachers with ties, silences, duplicates."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for t in range(tasks):
        kind = rng.choice(["p3", "gsm8k"])
        expected = None if kind == "p3" or rng.random() < 0.5 else float(rng.integers(0, 3))
        for teacher in rng.choice(["a", "b", "c"], rng.integers(1, 4), replace=False):
            for i in range(int(rng.integers(1, 5))):
                answer = None if rng.random() < 0.2 else str(rng.integers(0, 3))
                rows.append({"task_id": f"t{t}", "teacher": str(teacher), "sample_index": i, "kind": kind,
                             "expected": expected, "answer": answer,
                             "passed": bool(rng.random() < 0.5) if kind == "p3" else (
                                 answer is not None and expected is not None and float(answer) == expected),
                             "program": f"def f():  return {rng.integers(0, 3)}"})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)   # tasks interleaved


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("require_majority", [False, True])
def test_the_chunk_vote_equals_the_per_task_vote_row_for_row(seed, require_majority):
    from distill_ray.stages.vote import vote_groups

    rows = random_candidates(seed)
    if seed % 2:   # half the runs with the critic's verdicts beside the verifier's
        rows["critic_accept"] = np.random.default_rng(seed).random(len(rows)) < 0.7
    weights = {"a": 1.0, "b": 2.0, "c": 0.5}
    expected = pd.concat([vote_group(g.reset_index(drop=True), require_majority, weights)
                          for _, g in rows.groupby("task_id")], ignore_index=True)
    got = vote_groups(rows, require_majority, weights)
    order = ["task_id", "teacher", "sample_index"]
    expected, got = (f.sort_values(order).reset_index(drop=True)[expected.columns] for f in (expected, got))
    for frame in (expected, got):   # a task where every row abstains has no winner: None in one, NaN in the other
        frame["vote_answer"] = frame["vote_answer"].astype("string")
    assert expected["keep"].any() and not expected["keep"].all() and expected["agreement"].nunique() == 2
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
