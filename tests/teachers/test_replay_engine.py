"""The replay benchmark engine: recorded completions served per question (cycling past what was recorded), the
problems' references wrapped so the real extract and verify stages pass them, a seeded share of wrong ones, and
clear errors. The fast tests drive the teacher stage's own actor class without Ray; the slow one runs
``distill-ray generate`` twice on a Ray cluster: from references, then replaying that dataset."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pytest

from distill_ray.config import TeacherConfig
from distill_ray.prompts import build_messages, response_prefix
from distill_ray.shards import ShardSet
from distill_ray.stages.extract import extract_programs
from distill_ray.stages.teacher import TeacherActor
from distill_ray.stages.verify import judge_rows
from distill_ray.tasks import load_problems
from distill_ray.teachers import ENGINES, SamplingSettings, make_engine
from distill_ray.teachers.replay import ReplayEngine
from distill_ray.verify import SandboxLimits, Verifier

PUZZLES = {"source": "puzzles", "num_train": 60, "num_eval": 8}


def prompt_of(engine, question: str, kind: str = "p3") -> str:
    return engine.render(build_messages(kind, question, []), response_prefix(kind, question))


def write_dataset(directory, rows: list[tuple]) -> None:
    """A two-shard ``generate`` dataset of (question, teacher, sample_index, completion, finished) rows."""
    names = ["question", "teacher", "sample_index", "completion", "finished"]
    shards = ShardSet(directory)
    half = len(rows) // 2
    for chunk, part in enumerate((rows[:half], rows[half:])):
        shards.write(chunk, pa.table({n: [r[i] for r in part] for i, n in enumerate(names)}))


RECORDED = [("q1", "a", 1, "q1-s1", True), ("q2", "a", 0, "q2-s0", False), ("q1", "b", 0, "q1-other", True),
            ("q1", "a", 0, "q1-s0", True), ("q2", "a", 1, "q2-s1", True), ("q1", "a", 2, "q1-s2", False)]


def texts(batch) -> list[list[str]]:
    return [[g.text for g in row] for row in batch]


def test_serves_each_questions_recorded_completions_in_sample_order_and_cycles(tmp_path):
    write_dataset(tmp_path / "dataset", RECORDED)
    engine = make_engine("replay", str(tmp_path / "dataset"), teacher="a")
    prompts = [prompt_of(engine, "q2"), prompt_of(engine, "q1")]
    batch = engine.generate(prompts, SamplingSettings(n=3))
    assert texts(batch) == [["q2-s0", "q2-s1", "q2-s0"], ["q1-s0", "q1-s1", "q1-s2"]]
    assert [g.finished for g in batch[0]] == [False, True, False]
    assert texts(engine.generate(prompts[1:], SamplingSettings(n=7))) == [["q1-s0", "q1-s1", "q1-s2"] * 2 + ["q1-s0"]]
    # Without a teacher filter every teacher's rows of the question are served (by sample index).
    everyone = make_engine("replay", str(tmp_path / "dataset"))
    assert sorted(texts(everyone.generate(prompts[1:], SamplingSettings(n=4)))[0]) == ["q1-other", "q1-s0", "q1-s1",
                                                                                       "q1-s2"]


def test_counts_are_whitespace_words_and_provenance_names_the_engine(tmp_path):
    write_dataset(tmp_path / "dataset", [("q", "a", 0, "return  x + 1", True), ("r", "a", 0, "", True)])
    engine = make_engine("replay", str(tmp_path / "dataset"))
    prompt = prompt_of(engine, "q")
    batch = engine.generate([prompt], SamplingSettings(n=2, top_k_logprobs=3))
    first = batch[0][0]
    assert (first.completion_tokens, first.prompt_tokens) == (4, len(prompt.split()))
    assert first.logprobs is None and first.token_ids is None and first.error is None
    assert batch.stats.completion_tokens == 8 and batch.stats.seconds >= 0
    provenance = engine.provenance()
    assert provenance["engine"] == "replay" and provenance["engine_model"] == str(tmp_path / "dataset")
    assert provenance["engine_version"].startswith("distill-ray")
    assert "replay" in ENGINES and TeacherConfig(engine="replay", model="references").engine == "replay"


def test_unknown_questions_foreign_prompts_and_missing_datasets_are_clear_errors(tmp_path):
    write_dataset(tmp_path / "dataset", RECORDED)
    engine = ReplayEngine(str(tmp_path / "dataset"))
    with pytest.raises(KeyError, match="no completion for the question 'never recorded'"):
        engine.generate([prompt_of(engine, "never recorded")], SamplingSettings(n=1))
    with pytest.raises(ValueError, match="prompt_style 'chat'"):
        engine.generate(["Problem:\nq1\n\nSolution:\n"], SamplingSettings(n=1))
    with pytest.raises(FileNotFoundError, match="neither 'references' nor a dataset directory"):
        ReplayEngine(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="no candidate rows of teacher 'z'"):
        ReplayEngine(str(tmp_path / "dataset"), teacher="z")


def candidates(teacher: TeacherConfig, problems: list[dict]) -> pd.DataFrame:
    """The teacher stage's own actor over prompt rows built as the prompt stage builds them (few-shot
    exemplars included), then the extract and verify stages' functions: the pipeline without Ray."""
    batch = pd.DataFrame(problems)
    batch["messages"] = [json.dumps(build_messages(p["kind"], p["question"], [])) for p in problems]
    batch["response_prefix"] = [response_prefix(p["kind"], p["question"]) for p in problems]
    rows = extract_programs(TeacherActor(teacher, seed=0)(batch))
    with Verifier(SandboxLimits(timeout_s=10), workers=2) as verifier:
        return judge_rows(verifier, rows)


def replay_teacher(samples: int = 2, **options) -> TeacherConfig:
    return TeacherConfig(name="replay", engine="replay", model="references", samples=samples, engine_options=options)


def own_problems(path) -> dict:
    """One problem of each kind and prompt shape, with its reference, as a jsonl task file."""
    lines = [
        {"id": "p", "kind": "p3", "sat": "def sat(x: int) -> bool:\n    return x * 3 == 21", "ans_type": "int",
         "reference": "def sol():\n    return 21 // 3"},
        {"id": "g", "kind": "gsm8k", "question": "Ann has 3 apples and buys 4. How many?", "expected": 7,
         "reference": "def solution():\n    apples = 3 + 4\n    return apples"},
        {"id": "h", "kind": "asserts", "question": 'def add(a, b):\n    """Sum of a and b."""\n',
         "tests": ["assert add(2, 3) == 5"],
         "reference": 'def add(a, b):\n    """Sum of a and b."""\n    return a + b\n'},
        {"id": "m", "kind": "asserts", "question": "Write a function double(x) that returns 2 * x.",
         "tests": ["assert double(4) == 8"], "reference": "def double(x):\n    return 2 * x\n"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {"source": "jsonl", "path": str(path), "num_train": 4, "num_eval": 1}


def test_references_of_every_kind_pass_the_real_extract_and_verify(tmp_path):
    task = own_problems(tmp_path / "own.jsonl")
    train, _ = load_problems("jsonl", path=task["path"], num_train=4, num_eval=1)
    rows = candidates(replay_teacher(task=task, pool_size=0), train)
    assert len(rows) == 8 and rows["passed"].all(), rows[["task_id", "program", "status", "detail"]]
    assert set(rows["engine"]) == {"replay"} and rows["gen_error"].isna().all()


def test_references_of_the_run_pass_and_the_wrong_fraction_fails_at_about_that_rate():
    train, _ = load_problems("puzzles", num_train=PUZZLES["num_train"] + 5, num_eval=8, seed=0)
    problems = train[5:]   # as the run carves off a pool of 5: the engine was told pool_size=5
    right = candidates(replay_teacher(task=PUZZLES, pool_size=5), problems)
    assert right["passed"].all()
    mixed = candidates(replay_teacher(samples=4, task=PUZZLES, pool_size=5, wrong_fraction=0.3), problems)
    failed = 1 - mixed["passed"].mean()
    assert 0.2 <= failed <= 0.4, failed   # 240 samples; a wrong one passes only if two puzzles share an answer
    assert mixed["answer"].nunique() > right["answer"].nunique()   # the vote sees disagreement


def test_the_same_seed_serves_the_same_samples_and_another_seed_others():
    engine = ReplayEngine("references", task=PUZZLES, wrong_fraction=0.5)
    train, _ = load_problems("puzzles", num_train=20, num_eval=1, seed=0)
    prompts = [prompt_of(engine, p["question"]) for p in train]
    first = texts(engine.generate(prompts, SamplingSettings(n=4, seed=7)))
    assert first == texts(ReplayEngine("references", task=PUZZLES, wrong_fraction=0.5)
                          .generate(prompts, SamplingSettings(n=4, seed=7)))
    assert first != texts(engine.generate(prompts, SamplingSettings(n=4, seed=8)))
    # Without wrong samples the seed does not matter: every sample is the reference.
    plain = ReplayEngine("references", task=PUZZLES)
    assert texts(plain.generate(prompts, SamplingSettings(seed=1))) == texts(plain.generate(prompts,
                                                                                          SamplingSettings(seed=2)))
    with pytest.raises(ValueError, match="wrong_fraction"):
        ReplayEngine("references", task=PUZZLES, wrong_fraction=1.5)


def test_replay_loads_no_model_and_imports_no_torch():
    code = "\n".join([
        "import sys",
        "from distill_ray.tasks import load_problems",
        "from distill_ray.teachers import SamplingSettings, make_engine",
        "e = make_engine('replay', 'references', task={'source': 'puzzles', 'num_train': 3, 'num_eval': 1})",
        "question = load_problems('puzzles', num_train=3, num_eval=1)[0][0]['question']",
        "e.generate([e.render([{'role': 'user', 'content': question}])], SamplingSettings())",
        "print('torch' in sys.modules, 'transformers' in sys.modules)"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.slow
def test_generate_from_references_then_replaying_that_dataset(ray_cluster, tmp_path):
    """``distill-ray generate`` with the replay engine in the Ray actor pool: references (with 25% wrong) give a
    dataset whose verdicts match the wrong share; replaying that dataset gives back the same candidates."""
    from distill_ray import workflow
    from tests.pipelines.test_end_to_end import small_config

    def config(output, model, **options):
        return small_config(output, **{"teacher.engine": "replay", "teacher.model": model, "task.num_train": 12,
                                       "train.enabled": "false", "teacher.engine_options": json.dumps(options)})

    run = small_config(tmp_path / "unused", **{"task.num_train": 12})   # the run whose task the engine loads
    first = config(tmp_path / "refs", "references", task=run.task.model_dump(), task_seed=run.seed,
                   pool_size=run.prompt.pool_size, wrong_fraction=0.25)
    workflow.generate(first)
    recorded = pd.read_parquet(tmp_path / "refs" / "dataset")
    assert len(recorded) == 12 * 4 and set(recorded["engine"]) == {"replay"}
    assert 0.05 <= 1 - recorded["passed"].mean() <= 0.5 and recorded["keep"].any()

    workflow.generate(config(tmp_path / "again", str(tmp_path / "refs" / "dataset")))
    replayed = pd.read_parquet(tmp_path / "again" / "dataset")
    key = ["task_id", "sample_index"]
    a, b = (frame.sort_values(key).reset_index(drop=True) for frame in (recorded, replayed))
    assert a["completion"].tolist() == b["completion"].tolist() and a["passed"].tolist() == b["passed"].tolist()
