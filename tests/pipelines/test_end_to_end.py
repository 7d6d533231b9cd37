"""One whole small run through Ray Data and Ray Train + DeepSpeed, with the real SmolLM2 teacher."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from distill_ray.config import load_config
from distill_ray.stages.verify import row_check
from distill_ray.verify import verify_one
from tests.conftest import REPO

pytestmark = pytest.mark.slow

DATASET_COLUMNS = {"task_id", "teacher", "sample_index", "prompt", "completion", "program", "kind", "sat",
                   "ans_type", "expected", "tests", "entry_point", "passed", "status", "answer", "keep",
                   "vote_answer", "answer_share", "agreement", "gen_seconds", "verify_seconds", "label_type",
                   "label_distribution", "teacher_counts", "label_weight", "engine", "engine_model",
                   "engine_version", "sampling", "logprobs", "gen_error"}


def small_config(output_dir, **extra):
    overrides = [f"output_dir={output_dir}", "task.num_train=6", "task.num_eval=3",
                 "task.families=[add_const, sub_const, repeat_str]", "teacher.samples=4",
                 "teacher.max_new_tokens=12", "train.student_layers=2", "train.epochs=1", "train.batch_size=2",
                 "eval.samples=2", "eval.k=[1, 2]", "eval.max_new_tokens=12", "verify.workers_per_actor=1",
                 "teacher.engine=hf",   # the demo's teacher runs on vllm, whose own tests are tests/teachers
                 *[f"{k}={v}" for k, v in extra.items()]]
    return load_config(REPO / "configs" / "demo.yaml", overrides)


def test_run_generates_verifies_votes_trains_and_reports(ray_cluster, tmp_path):
    from distill_ray import workflow

    cfg = small_config(tmp_path / "run")
    report = workflow.run(cfg)

    rows = pq.read_table(tmp_path / "run" / "dataset").to_pandas()
    assert DATASET_COLUMNS <= set(rows.columns)
    assert len(rows) == 6 * 4 and rows["task_id"].nunique() == 6
    assert sorted(rows.groupby("task_id")["sample_index"].apply(sorted).iloc[0]) == [0, 1, 2, 3]
    # Every row carries its own check: re-running it independently gives the stored verdict.
    for row in rows.itertuples(index=False):
        assert verify_one(row_check(row)).passed == row.passed
    assert rows["keep"].sum() > 0, "the teacher verified nothing on the easiest families"
    assert (rows[rows["keep"]]["passed"]).all()
    assert rows.loc[rows["keep"], "label_type"].eq("hard").all() and rows.loc[rows["keep"], "label_weight"].eq(1.0).all()

    assert report["generation"]["verified"] == int(rows["passed"].sum())
    manifest = json.loads((tmp_path / "run" / "dataset.manifest.json").read_text())
    assert sum(f["rows"] for f in manifest["files"]) == len(rows)
    assert manifest["config"]["task"]["num_train"] == 6 and "program" in manifest["columns"]
    assert report["training"]["steps"] >= 1
    assert set(report["evaluation"]) == {"teacher", "student_init", "student"}
    for summary in report["evaluation"].values():
        assert summary["problems"] == 3 and summary["samples"] == 6
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["funnel"]["candidates"] == 24
    assert (tmp_path / "run" / "report.md").read_text().startswith("# distill-ray report")
    assert (tmp_path / "run" / "report.png").stat().st_size > 1000

    # `distill-ray verify` re-runs every stored check through the verifier actors and agrees with them.
    assert workflow.reverify(cfg) == {"rows": 24, "passed": int(rows["passed"].sum()), "agree_with_stored": 24}

    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "student")
    assert student.config.num_hidden_layers == 2
    card = json.loads((tmp_path / "run" / "student" / "model_card.json").read_text())
    assert card["evaluation"] == report["evaluation"]["student"] and card["training"]["steps"] >= 1
    assert card["data"]["funnel"]["trained_rows"] == int(rows["keep"].sum())
    assert "pass@1" in (tmp_path / "run" / "student" / "model_card.md").read_text()


def test_gsm8k_program_of_thought_runs_through_the_same_pipeline(ray_cluster, tmp_path, shared_data):
    from distill_ray import workflow

    cfg = small_config(tmp_path / "gsm8k", **{"task.source": "gsm8k", "task.path": str(shared_data / "gsm8k"),
                                              "task.families": "null", "task.num_train": 2,
                                              "teacher.samples": 2, "teacher.max_new_tokens": 48})
    stats = workflow.generate(cfg)
    rows = pq.read_table(tmp_path / "gsm8k" / "dataset").to_pandas()
    assert stats["candidates"] == len(rows) == 4
    assert (rows["kind"] == "gsm8k").all() and rows["expected"].notna().all()
    assert rows["program"].str.startswith("def solution():\n").all()
    assert set(rows["status"]) <= {"pass", "fail", "error", "timeout", "memory"}
    # The prompt shows the hand-written program-of-thought exemplars, then the question.
    assert rows["prompt"].iloc[0].count("def solution():") >= 4
    assert rows["question"].iloc[0] in rows["prompt"].iloc[0]
