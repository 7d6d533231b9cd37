"""Two real teachers in one job (SmolLM2-135M-Instruct with its chat template, Gemma-3-270M with plain
few-shot text) on real GSM8K train questions, some with their expected answer removed (unlabelled):
provenance of every row, both vote sets, and the per-teacher stats."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from distill_ray.config import load_config
from distill_ray.evaluate.report import render_markdown
from distill_ray.tasks.gsm8k import parse_record
from tests.conftest import REPO

SAMPLES = 2
LABELLED, UNLABELLED, POOL = 4, 3, 2


def gsm8k_jsonl(shared_data, path):
    """The shortest GSM8K train questions (the easiest for 135M/270M teachers) as a jsonl task file:
    POOL exemplars, LABELLED problems, UNLABELLED ones without `expected`, and one eval problem."""
    records = []
    with open(shared_data / "gsm8k" / "train.jsonl") as f:
        for i, line in zip(range(400), f):
            question, expected, reference = parse_record(line)
            if reference:
                records.append({"id": f"gsm8k-train-{i}", "kind": "gsm8k", "question": question,
                                "expected": expected, "reference": reference})
    records = sorted(records, key=lambda r: len(r["question"]))[: POOL + LABELLED + UNLABELLED + 1]
    for r in records[POOL + LABELLED:-1]:
        del r["expected"]
    records[-1]["split"] = "eval"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def two_teacher_config(tmp_path, task_file):
    teachers = ("[{name: smollm2, model: smollm2, prompt_style: chat, temperature: 0.0}, "
                "{name: gemma3, model: gemma3, prompt_style: plain, temperature: 0.0, weight: 2}]")
    return load_config(REPO / "configs" / "demo.yaml", [
        f"output_dir={tmp_path / 'run'}", "task.source=jsonl", f"task.path={task_file}",
        f"task.num_train={LABELLED + UNLABELLED}", "task.num_eval=1", f"prompt.pool_size={POOL}",
        f"prompt.num_shots={POOL}", f"teacher.samples={SAMPLES}", "teacher.max_new_tokens=48",
        "teacher.cpus_per_actor=0.25", "teacher.torch_threads=1", "teacher.engine=hf", "verify.workers_per_actor=1",
        f"teachers={teachers}"])


@pytest.mark.slow
def test_two_teachers_on_gsm8k_vote_into_agreement_and_disagreement_sets(ray_cluster, tmp_path, shared_data):
    from distill_ray import workflow

    task_file = gsm8k_jsonl(shared_data, tmp_path / "gsm8k.jsonl")
    records = [json.loads(line) for line in task_file.read_text().splitlines()]
    cfg = two_teacher_config(tmp_path, task_file)
    stats = workflow.generate(cfg)
    rows = pq.read_table(tmp_path / "run" / "dataset").to_pandas()
    problems = LABELLED + UNLABELLED

    # provenance: each teacher wrote problems x samples rows, sample_index 0..n-1 per (task, teacher)
    assert rows.groupby("teacher").size().to_dict() == {"gemma3": problems * SAMPLES, "smollm2": problems * SAMPLES}
    indices = rows.groupby(["task_id", "teacher"])["sample_index"].apply(sorted)
    assert len(indices) == problems * 2 and all(list(i) == list(range(SAMPLES)) for i in indices)
    for row in rows.itertuples(index=False):
        assert row.question in row.prompt and row.prompt.endswith(row.response_prefix)
        if row.teacher == "smollm2":  # its chat template; gemma3 gets plain few-shot text after its BOS
            assert "<|im_start|>assistant" in row.prompt and json.loads(row.sampling)["stop"] == []
        else:
            assert row.prompt.startswith("<bos>You solve grade-school math") and "Solution:\n" in row.prompt
            assert "<|im_start|>" not in row.prompt
            assert json.loads(row.sampling)["stop"] == ["\nProblem:"]   # it stops at the next problem

    # unlabelled problems (those not drawn into the exemplar pool): an answer is recorded, never a verdict
    unlabelled = rows[rows["expected"].isna()]
    without_expected = {f"jsonl/{r['id']}" for r in records if "expected" not in r}
    assert set(unlabelled["task_id"]) == without_expected & set(rows["task_id"]) and len(unlabelled)
    assert not unlabelled["passed"].any()
    assert set(unlabelled["status"]) <= {"answered", "error", "fail", "timeout", "memory"}
    assert unlabelled.loc[unlabelled["status"] == "answered", "answer"].notna().all()

    # both vote sets are non-empty; the per-task vote record is consistent with the rows
    per_task = rows.groupby("task_id").first()
    print(per_task[["expected", "agreement", "vote_answer", "teacher_counts"]].to_string())  # shown with -s
    assert per_task["agreement"].any() and not per_task["agreement"].all(), per_task[["agreement", "teacher_counts"]]
    for task_id, g in rows.groupby("task_id"):
        counts = json.loads(g["teacher_counts"].iloc[0])
        for teacher, c in counts.items():
            answered = g[(g["teacher"] == teacher) & g["answer"].notna()]
            assert sum(c.values()) == len(answered) <= SAMPLES
        distribution = json.loads(g["label_distribution"].iloc[0])
        assert not distribution or sum(distribution.values()) == pytest.approx(1.0)
    kept = rows[rows["keep"]]
    assert (kept.loc[kept["label_type"] == "hard", "label_weight"] == 1.0).all()
    soft = kept[kept["label_type"] == "soft"]
    assert ((soft["label_weight"] - soft["answer_share"]).abs() < 1e-9).all()
    assert kept.loc[kept["expected"].notna(), "passed"].all()  # labelled rows: only verified ones are kept

    # stats and report: per-teacher tokens/s, agreement/disagreement counts
    assert stats["agreement_problems"] + stats["disagreement_problems"] == problems
    assert stats["agreement_problems"] == int(per_task["agreement"].sum())
    for name in ("smollm2", "gemma3"):
        teacher = stats["per_teacher"][name]
        assert teacher["candidates"] == problems * SAMPLES and teacher["tokens_per_s"] > 0
        assert teacher["completion_tokens"] == int(rows.loc[rows["teacher"] == name, "completion_tokens"].sum())
    markdown = render_markdown({"name": "t", "generation": stats})
    assert "| gemma3 |" in markdown and "disagreement" in markdown


def test_two_teachers_are_two_pools_between_one_prompt_stage_and_extract():
    from distill_ray.config import PromptConfig, TeacherConfig, VerifyConfig, VoteConfig
    from distill_ray.pipelines.distill import distill_stages
    from distill_ray.stages import UnionStage, check_flow, describe
    from distill_ray.tasks import PROBLEM_COLUMNS

    specs = [TeacherConfig(name=n, engine="hf", model=m, samples=2, prompt_style=s, weight=w)
             for n, m, s, w in (("a", "smollm2", "chat", 1.0), ("b", "gemma3", "plain", 2.0))]
    stages = distill_stages(specs, PromptConfig(), VerifyConfig(), [], seed=0, vote_cfg=VoteConfig())
    assert [row["stage"] for row in describe(stages)] == ["prompt", "teachers[a | b]", "extract", "verify", "vote"]
    union = stages[1]
    assert isinstance(union, UnionStage) and [b[0].name for b in union.branches] == ["teacher:a", "teacher:b"]
    assert [b[0].init_kwargs["teacher"].prompt_style for b in union.branches] == ["chat", "plain"]
    assert stages[-1].fn_kwargs["weights"] == {"a": 1.0, "b": 2.0}
    columns = check_flow(PROBLEM_COLUMNS, stages)
    assert {"teacher", "label_weight", "label_distribution", "teacher_counts"} <= set(columns)
    with pytest.raises(ValueError, match="unique"):
        distill_stages([specs[0], specs[0]], PromptConfig(), VerifyConfig(), [], seed=0)


def test_evaluation_samples_each_teacher_with_its_own_settings(tmp_path):
    from distill_ray.stages.teacher import engine_options
    from distill_ray.workflow import default_eval_models, eval_teacher_config

    cfg = load_config(REPO / "configs" / "two_teachers.yaml", [f"output_dir={tmp_path}"])
    assert default_eval_models(cfg) == {"teacher:smollm2": "smollm2", "teacher:gemma3": "gemma3"}
    assert eval_teacher_config(cfg, "teacher:gemma3").prompt_style == "plain"
    assert eval_teacher_config(cfg, "student").model == "smollm2"  # students sample like `teacher`
    specs = cfg.teacher_list()
    assert [(s.name, s.weight, s.prompt_style, engine_options(s)) for s in specs] == [
        ("smollm2", 1.0, "chat", {"torch_threads": 1}), ("gemma3", 2.0, "plain", {"torch_threads": 1})]
