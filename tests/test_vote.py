import pandas as pd

from distill_ray.vote import vote_group


def group(answers, passed, programs=None):
    n = len(answers)
    return pd.DataFrame({"task_id": ["t"] * n, "teacher": ["a"] * n, "sample_index": list(range(n)),
                         "answer": answers, "passed": passed,
                         "program": programs or [f"def sol():\n    return {i}\n" for i in range(n)]})


def test_agreement_gives_a_hard_label():
    out = vote_group(group(["12", "12", "12"], [True, True, True]))
    assert out["agreement"].all() and out["vote_answer"].eq("12").all()
    assert out["answer_share"].eq(1.0).all() and out["keep"].all()


def test_disagreement_gives_soft_labels():
    out = vote_group(group(["12", "12", "7", None], [True, True, False, False]))
    assert not out["agreement"].any()
    assert out["vote_answer"].iloc[0] == "12" and abs(out["vote_share"].iloc[0] - 2 / 3) < 1e-9
    assert [round(x, 3) for x in out["answer_share"]] == [0.667, 0.667, 0.333, 0.0]
    assert list(out["keep"]) == [True, True, False, False]


def test_duplicates_are_kept_once():
    programs = ["def sol():\n    return 1\n", "def sol():\n    return  1\n", "def sol():\n    return 2\n"]
    out = vote_group(group(["1", "1", "2"], [True, True, True], programs))
    assert list(out["duplicate"]) == [False, True, False]
    assert list(out["keep"]) == [True, False, True]


def test_require_majority_drops_verified_minority_answers():
    out = vote_group(group(["5", "5", "6"], [True, True, True]), require_majority=True)
    assert list(out["keep"]) == [True, True, False]


def test_no_answers_at_all():
    out = vote_group(group([None, None], [False, False]))
    assert out["vote_answer"].isna().all() and not out["keep"].any() and out["vote_share"].eq(0).all()
