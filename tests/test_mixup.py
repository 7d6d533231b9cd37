"""LM mix-up (distill_ray/mixup.py): pair prompts blend two different real problems, written problems go through
GAL's parse, dedupe and decontamination (counted in their own audit), and the vote gives a mix-up problem a soft
label that sums to 1 and follows the teachers' votes (hand-computed below)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from distill_ray import gal, mixup
from distill_ray.config import MixupConfig, TeacherConfig, load_config
from distill_ray.pipelines.gal import SOURCE_COLUMNS, mixup_stages
from distill_ray.stages import check_flow
from distill_ray.stages.vote import vote_group, vote_groups
from distill_ray.tasks.decontaminate import EvalIndex
from tests.stages.test_vote import random_candidates
from tests.test_gal import EVAL_Q, NEW_Q, OTHER_Q, TRAIN_Q, problem, written


def puzzles(families=("add_const", "mul_const"), n=4):
    return [problem(f"p/{f}/{i}", f"def sat(x: int) -> bool:\n    return x + {i} == {10 * i}", kind="p3", family=f)
            for f in families for i in range(1, n + 1)]


# --- pair prompts -----------------------------------------------------------------------------------------

def test_a_pair_prompt_shows_two_different_problems_of_one_family_and_asks_to_blend_them():
    train = puzzles()
    frame = mixup.pair_prompts(train, pairs=6, seed=0)
    assert list(frame["task_id"]) == [f"mixup/p{i}" for i in range(6)]
    assert list(frame["family"]) == ["add_const", "mul_const"] * 3
    for row in frame.itertuples():
        a, b = json.loads(row.shown)
        assert a != b and f"/{row.family}/" in a and f"/{row.family}/" in b
        messages = json.loads(row.messages)
        shown = [m["content"] for m in messages if m["role"] == "assistant"]
        assert shown == [next(p["sat"] for p in train if p["task_id"] == t) for t in (a, b)]   # both sources
        assert messages[-1] == {"role": "user", "content": mixup.ASK} and row.response_prefix == "def sat("
    assert frame.equals(mixup.pair_prompts(train, pairs=6, seed=0))                       # seeded
    assert not frame.equals(mixup.pair_prompts(train, pairs=6, seed=1))


def test_a_problem_is_never_paired_with_itself_or_with_a_copy_of_its_text():
    # One family of two texts, one of them three times: every pair is those two texts; a family of one problem
    # takes no turn.
    copies = [problem(f"gsm8k/train/{i}", TRAIN_Q) for i in range(3)] + [problem("gsm8k/train/9", NEW_Q)]
    lone = [problem("gsm8k/train/5", OTHER_Q, family="lone")]
    frame = mixup.pair_prompts(copies + lone, pairs=20, seed=0)
    assert set(frame["family"]) == {"gsm8k"}
    for row in frame.itertuples():
        texts = [m["content"] for m in json.loads(row.messages) if m["role"] == "assistant"]
        assert sorted(texts) == sorted([TRAIN_Q, NEW_Q])
    with pytest.raises(ValueError, match="two different"):
        mixup.pair_prompts(copies[:3], pairs=1, seed=0)
    with pytest.raises(ValueError, match="kinds"):
        mixup.pair_prompts([{**copies[0], "kind": "asserts"}], pairs=1, seed=0)


# --- the stages -------------------------------------------------------------------------------------------

def test_the_mixup_stages_declare_their_flow_and_write_mixup_problems():
    stages = mixup_stages([TeacherConfig(name="a")], MixupConfig(pairs=2, samples=3), seed=0)
    assert stages[-1].name == "mixup_inputs"
    assert {"source", "reject", "writer_prompt"} <= set(check_flow(SOURCE_COLUMNS, stages))
    rows = stages[-1].fn(pd.DataFrame({"task_id": "mixup/p0", "kind": "gsm8k", "family": "gsm8k", "difficulty": 1,
                                       "teacher": "t", "sample_index": [0], "completion": [NEW_Q],
                                       "finished": True}), **stages[-1].fn_kwargs)
    assert rows.loc[0, "source"] == "mixup" and rows.loc[0, "task_id"] == "mixup/p0/t/k0"


# --- decontamination and the audit ------------------------------------------------------------------------

def test_a_blended_copy_of_an_eval_problem_is_dropped_and_the_counts_say_so(tmp_path):
    rows = written([NEW_Q, EVAL_Q.replace("altogether", "in total"), EVAL_Q, OTHER_Q])
    index = EvalIndex([problem("gsm8k/test/7", EVAL_Q, split="eval")], 0.8)
    fates = gal.filter_inputs(rows, [problem("gsm8k/train/1", TRAIN_Q)], index, 0.8)
    assert fates[0] == fates[3] == "kept" and all(f.startswith("contaminated") for f in fates[1:3])
    records = [{"task_id": f"mixup/p0/t/k{i}", "teacher": "t", "fate": f} for i, f in enumerate(fates)]
    gal.write_audit(tmp_path, records, "mixup")
    assert (tmp_path / "mixup_inputs.jsonl").exists() and not (tmp_path / "gal_inputs.jsonl").exists()
    assert gal.summary(gal.read_audit(tmp_path, "mixup"))["contaminated"] == 2


# --- soft labels from the vote ----------------------------------------------------------------------------

def candidates(samples, source="mixup", kind="p3"):
    """One task's rows: {teacher: [(program, passed), ...]}."""
    rows = [{"task_id": "t", "teacher": t, "sample_index": i, "kind": kind, "expected": None, "answer": None,
             "passed": ok, "program": program, "source": source}
            for t, written_by in samples.items() for i, (program, ok) in enumerate(written_by)]
    return pd.DataFrame(rows)


def test_a_mixup_puzzle_is_soft_labelled_by_the_share_of_each_verified_program():
    # One teacher: P1 twice, P2 once verified, P3 refuted. Kept: P1 (once), P2. Shares of the 3 samples that wrote
    # a kept program: P1 2/3, P2 1/3; the duplicate and the refuted row weigh 0.
    out = vote_group(candidates({"a": [("P1", True), ("P1", True), ("P2", True), ("P3", False)]}))
    assert out["label_weight"].tolist() == pytest.approx([2 / 3, 0, 1 / 3, 0])
    assert out["keep"].tolist() == [True, False, True, False] and set(out["label_type"]) == {"soft"}
    # The same rows of a GAL problem: hard labels, weight 1 each.
    assert vote_group(candidates({"a": [("P1", True), ("P1", True), ("P2", True), ("P3", False)]}, "gal"))[
        "label_weight"].tolist() == [1, 0, 1, 0]


def test_several_teachers_weigh_a_mixup_label_by_their_weights_and_it_sums_to_one():
    # a (weight 1): P1, P1, P2; b (weight 2): P2. Per teacher: a {P1: 2/3, P2: 1/3}, b {P2: 1}; weighted:
    # P1 = (1 * 2/3) / 3 = 2/9, P2 = (1 * 1/3 + 2 * 1) / 3 = 7/9. b's P2 duplicates a's: not kept, still a vote.
    rows = candidates({"a": [("P1", True), ("P1", True), ("P2", True)], "b": [("P2", True)]})
    out = vote_group(rows, weights={"a": 1.0, "b": 2.0})
    assert out["label_weight"].tolist() == pytest.approx([2 / 9, 0, 7 / 9, 0])
    assert out.loc[out["keep"], "label_weight"].sum() == pytest.approx(1.0)


def test_an_unlabelled_mixup_question_keeps_the_vote_and_its_weights_are_the_answer_distribution():
    # Two teachers disagree (a: 7, 7, 8; b: 8): every answered row is kept. Program shares: a's programs 1/3
    # each of a's half, b's the other half: answer 7 = 2/6, answer 8 = 1/6 + 1/2 = 4/6 (the vote's distribution).
    rows = candidates({"a": [("A1", False), ("A2", False), ("A3", False)], "b": [("B1", False)]}, kind="gsm8k")
    rows["answer"] = ["7", "7", "8", "8"]
    out = vote_group(rows)
    assert not out["agreement"].any() and out["keep"].all()
    assert out["label_weight"].tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2])
    assert json.loads(out.loc[0, "label_distribution"]) == pytest.approx({"8": 2 / 3, "7": 1 / 3})


@pytest.mark.parametrize("seed", range(3))
def test_the_chunk_vote_labels_mixup_problems_as_the_per_task_vote(seed):
    rows = random_candidates(seed)
    rows["source"] = ["mixup" if int(t[1:]) % 2 else "puzzles" for t in rows["task_id"]]
    weights = {"a": 1.0, "b": 2.0, "c": 0.5}
    expected = pd.concat([vote_group(g.reset_index(drop=True), False, weights) for _, g in rows.groupby("task_id")],
                         ignore_index=True)
    order = ["task_id", "teacher", "sample_index"]
    got, expected = (f.sort_values(order).reset_index(drop=True) for f in (vote_groups(rows, False, weights), expected))
    pd.testing.assert_series_equal(got["label_weight"], expected["label_weight"])
    assert got["label_type"].tolist() == expected["label_type"].tolist()
    sums = got[got["keep"] & (got["source"] == "mixup")].groupby("task_id")["label_weight"].sum()
    assert len(sums) and sums.to_numpy() == pytest.approx(1.0)


# --- config -----------------------------------------------------------------------------------------------

def test_the_mixup_section_is_validated_and_a_table_source_is_refused(tmp_path):
    assert load_config(None, ["mixup.pairs=3"]).mixup == MixupConfig(pairs=3)
    for bad in ("mixup.pairs=-1", "mixup.samples=0", "mixup.temperature=-0.5", "mixup.max_new_tokens=0",
                "mixup.shots=2"):
        with pytest.raises(ValueError):
            load_config(None, [bad])
    from distill_ray.workflow import load_train_source

    cfg = load_config(None, [f"output_dir={tmp_path}", "task.source=table", f"task.path={tmp_path}", "mixup.pairs=1"])
    with pytest.raises(ValueError, match="mixup.pairs"):
        load_train_source(cfg)
