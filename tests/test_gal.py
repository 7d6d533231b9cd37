"""GAL (distill_ray/gal.py): teacher-written problems are parsed into problem rows with their provenance, malformed
ones are dropped with a reason, copies of evaluation problems and duplicates (exact and near, of real or of earlier
generated problems) are dropped and counted, and the rest enter the distillation pipeline like real problems."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from distill_ray import gal
from distill_ray.config import GalConfig, PromptConfig, TeacherConfig, VerifyConfig, VoteConfig, load_config
from distill_ray.pipelines.distill import distill_stages
from distill_ray.pipelines.gal import SOURCE_COLUMNS, gal_stages, writers
from distill_ray.stages import check_flow
from distill_ray.stages.gal_inputs import written_rows
from distill_ray.tasks.decontaminate import EvalIndex
from distill_ray.tasks.schema import PROBLEM_COLUMNS, check_problem, make_problem
from tests.conftest import REPO

EVAL_Q = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
          "How many clips did Natalia sell altogether in April and May?")
TRAIN_Q = ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
           "How much did she earn?")
NEW_Q = "Tom has 3 boxes with 7 apples in each box. He eats 2 apples. How many apples does he have left?"
OTHER_Q = "A baker makes 24 rolls every hour for 5 hours and sells 100 of them. How many rolls are left over?"


def problem(task_id, question, split="train", kind="gsm8k", family="gsm8k"):
    sat = question if kind == "p3" else ""
    return make_problem(task_id=task_id, split=split, source="gsm8k" if kind == "gsm8k" else "puzzles",
                        family=family, difficulty=1, kind=kind, question=question, sat=sat,
                        ans_type="int" if kind == "p3" else "", expected=10.0 if kind == "gsm8k" else None)


def written(completions, kind="gsm8k", family="gsm8k", finished=True):
    """The gal_inputs stage over a teacher's rows for writer prompt gal/p0."""
    batch = pd.DataFrame({"task_id": "gal/p0", "kind": kind, "family": family, "difficulty": 1, "teacher": "smollm2",
                          "sample_index": range(len(completions)), "completion": completions,
                          "finished": finished, "messages": "[]"})
    return written_rows(batch)


# --- parsing a teacher's text ------------------------------------------------------------------------

def test_a_written_question_is_cut_after_its_question_and_labels_and_answers_are_dropped():
    assert gal.parse_question("Problem: " + NEW_Q + "\n\nAnswer: 19", True) == (NEW_Q, "")
    assert gal.parse_question(NEW_Q + " He is happy.\nSolution: 3 * 7 = 21", True) == (NEW_Q, "")
    assert gal.parse_question("  Tom has 3 boxes\n with 7 apples in each box. How many apples?  ", True) == (
        "Tom has 3 boxes with 7 apples in each box. How many apples?", "")


@pytest.mark.parametrize("text, finished, reason", [
    ("Tom has 3 boxes with 7 apples in each box and he eats 2 of them", True, "no_question"),
    ("Tom has 3 boxes with 7 apples in each box and he eats 2 of them", False, "unfinished"),
    ("Tom has some boxes with apples in each box. How many apples does he have?", True, "no_number"),
    ("How many is 3 + 4?", True, "too_short"),
    ("Tom has 3 boxes " + "and more boxes " * 80 + "so how many?", True, "too_long"),
    ("", True, "no_question"),
])
def test_a_malformed_question_is_rejected_with_its_reason(text, finished, reason):
    assert gal.parse_question(text, finished) == ("", reason)


def test_a_written_puzzle_keeps_only_its_sat_function_and_needs_a_supported_answer_type():
    sat, ans_type, why = gal.parse_puzzle("x: int) -> bool:\n    return x + 3 == 10\n\ndef sol():\n    return 7\n```\nmore")
    assert (sat, ans_type, why) == ("def sat(x: int) -> bool:\n    return x + 3 == 10", "int", "")
    # A completion cut mid-statement keeps the lines that parse.
    assert gal.parse_puzzle("s: str) -> bool:\n    return s[::-1] == 'ab'\n    if (")[2] == ""
    assert gal.parse_puzzle("x: int) -> bool: return (((")[2] == "unparsable"
    assert gal.parse_puzzle("x) -> bool:\n    return x == 2")[2] == "no_answer_type"
    assert gal.parse_puzzle("x: dict) -> bool:\n    return x == {}")[2] == "unsupported_answer_type"
    assert gal.parse_puzzle("x: int) -> bool:\n    pass")[2] == "no_sat"


# --- the stage: rows with provenance and declared columns ----------------------------------------------

def test_written_rows_are_problems_with_provenance_and_malformed_ones_carry_their_reason():
    rows = written([NEW_Q, "no question here at all, just 3 words and more words"])
    assert list(rows.columns[:len(PROBLEM_COLUMNS)]) == list(PROBLEM_COLUMNS)
    good, bad = rows.to_dict("records")
    assert good["task_id"] == "gal/p0/smollm2/k0" and good["source"] == "gal" and good["split"] == "train"
    assert good["question"] == NEW_Q and good["expected"] is None and good["reject"] == ""
    assert good["writer_prompt"] == "gal/p0" and good["family"] == "gsm8k"
    check_problem({c: good[c] for c in PROBLEM_COLUMNS})
    assert bad["task_id"] == "gal/p0/smollm2/k1" and bad["reject"] == "no_question"
    puzzle = written(["x: int) -> bool:\n    return x * 2 == 8"], kind="p3", family="mul_const").iloc[0]
    assert puzzle["sat"] == puzzle["question"] == "def sat(x: int) -> bool:\n    return x * 2 == 8"
    assert puzzle["ans_type"] == "int" and puzzle["family"] == "mul_const"


def test_the_gal_stages_declare_a_consistent_flow_and_their_problems_feed_the_distill_pipeline():
    teachers = [TeacherConfig(name="a"), TeacherConfig(name="b", samples=7)]
    stages = gal_stages(teachers, GalConfig(prompts=2, samples=3), seed=0)
    columns = check_flow(SOURCE_COLUMNS, stages)
    assert set(PROBLEM_COLUMNS) | {"reject", "writer_prompt", "teacher", "completion"} <= set(columns)
    assert all(columns[c] == t for c, t in PROBLEM_COLUMNS.items())
    assert [w.samples for w in writers(teachers, GalConfig(samples=3))] == [3, 3]   # the writers' own sampling
    # What the stage writes is what the distillation pipeline reads from a problem.
    distill = distill_stages([TeacherConfig()], PromptConfig(), VerifyConfig(), [], 0, VoteConfig())
    check_flow({c: columns[c] for c in PROBLEM_COLUMNS}, distill)
    # A writer prompt without its kind is refused before any teacher starts.
    with pytest.raises(ValueError, match="'gal_inputs' reads \\['kind'\\]"):
        check_flow({c: t for c, t in SOURCE_COLUMNS.items() if c != "kind"}, stages)


# --- writer prompts ------------------------------------------------------------------------------------

def test_writer_prompts_show_real_train_problems_of_one_family_at_a_time():
    train = [problem(f"p/{f}/{i}", f"def sat(x: int) -> bool:\n    return x + {i} == {10 * i}", kind="p3", family=f)
             for f in ("add_const", "mul_const") for i in range(1, 5)]
    frame = gal.writer_prompts(train, prompts=4, shots=3, seed=0)
    assert list(frame["family"]) == ["add_const", "mul_const", "add_const", "mul_const"]
    assert list(frame["task_id"]) == ["gal/p0", "gal/p1", "gal/p2", "gal/p3"]
    for row in frame.itertuples():
        shown = json.loads(row.shown)
        assert len(shown) == 3 and all(f"/{row.family}/" in t for t in shown)
        messages = json.loads(row.messages)
        assert messages[0]["role"] == "system" and messages[-1] == {"role": "user", "content": gal.ASK}
        assert [m["content"] for m in messages if m["role"] == "assistant"] == [
            next(p["sat"] for p in train if p["task_id"] == t) for t in shown]
        assert row.response_prefix == "def sat("
    assert frame.equals(gal.writer_prompts(train, prompts=4, shots=3, seed=0))            # seeded
    with pytest.raises(ValueError, match="kinds"):
        gal.writer_prompts([{**train[0], "kind": "asserts"}], prompts=1, shots=1, seed=0)


# --- dedupe and decontamination ------------------------------------------------------------------------

def test_copies_of_eval_problems_and_duplicates_are_dropped_and_counted_the_rest_kept():
    rows = written([
        NEW_Q,                                                  # kept
        EVAL_Q,                                                 # an evaluation problem, word for word
        EVAL_Q.replace("altogether", "in total"),               # a near copy of it
        TRAIN_Q.upper(),                                        # a real train problem (case aside)
        NEW_Q.replace("left", "left now"),                      # near an earlier generated one
        "  " + NEW_Q.replace(".", " ."),                        # the same words as an earlier generated one
        "garbage without a question",                           # malformed
        OTHER_Q,                                                # kept
    ])
    index = EvalIndex([problem("gsm8k/test/7", EVAL_Q, split="eval")], 0.8)
    fates = gal.filter_inputs(rows, [problem("gsm8k/train/1", TRAIN_Q)], index, 0.8)
    assert fates[0] == "kept" and fates[7] == "kept"
    assert fates[1] == "contaminated: the same text as evaluation problem gsm8k/test/7"
    assert fates[2].startswith("contaminated: near-duplicate") and fates[2].endswith("gsm8k/test/7")
    assert fates[3:6] == ["duplicate_exact", "duplicate_near", "duplicate_exact"]
    assert fates[6] == "malformed: no_question"
    records = [{"teacher": "smollm2", "fate": f} for f in fates]
    assert gal.summary(records) == {"generated": 8, "kept": 2, "malformed": 1,
                                    "malformed_reasons": {"no_question": 1}, "duplicate_exact": 2,
                                    "duplicate_near": 1, "contaminated": 2, "per_teacher": {"smollm2": 2}}
    # Without an eval index nothing is contaminated: the eval copies are new problems then.
    assert gal.filter_inputs(rows, [], None, 0.8)[1:3] == ["kept", "duplicate_near"]


def test_the_audit_round_trips_and_a_table_source_is_refused(tmp_path):
    records = [{"task_id": "gal/p0/t/k0", "teacher": "t", "fate": "kept", "text": NEW_Q}]
    gal.write_audit(tmp_path, records)
    assert gal.read_audit(tmp_path) == records and gal.read_audit(tmp_path / "none") == []
    from distill_ray.workflow import load_train_source

    cfg = load_config(None, [f"output_dir={tmp_path}", "task.source=table", f"task.path={tmp_path}", "gal.prompts=1"])
    with pytest.raises(ValueError, match="table source"):
        load_train_source(cfg)


# --- with the real tiny teacher ---------------------------------------------------------------------------

@pytest.mark.slow
def test_generate_adds_written_puzzles_that_the_pipeline_annotates_and_the_manifest_counts(ray_cluster, tmp_path):
    from distill_ray import workflow

    cfg = load_config(REPO / "configs" / "demo.yaml", [
        f"output_dir={tmp_path}", "task.num_train=3", "task.num_eval=3", "task.families=[add_const, sub_const]",
        "teacher.samples=2", "teacher.max_new_tokens=12", "verify.workers_per_actor=1", "gal.prompts=2",
        "gal.samples=3", "gal.max_new_tokens=32", "train.enabled=false", "teacher.engine=hf"])
    stats = workflow.generate(cfg)
    audit = gal.read_audit(tmp_path)
    assert len(audit) == 2 * 3 == stats["gal"]["generated"]
    counts = stats["gal"]
    assert counts["kept"] + counts["malformed"] + counts["duplicate_exact"] + counts["duplicate_near"] \
        + counts["contaminated"] == 6
    manifest = json.loads((tmp_path / "dataset.manifest.json").read_text())
    assert manifest["stats"]["gal"] == counts
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "dataset").to_pandas()
    generated = rows[rows["source"] == "gal"]
    assert generated["task_id"].nunique() == counts["kept"] == stats["problems"] - 3
    assert set(generated["task_id"]) == {r["task_id"] for r in audit if r["fate"] == "kept"}
    assert (generated["sat"].str.startswith("def sat(")).all() and len(generated) == 2 * counts["kept"]
