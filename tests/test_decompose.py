"""Decompositional distillation: the multi-step family, the decomposition format, the row split, the recipe's
flow, the decomposer -> solver wiring at evaluation, and the config. No model generates here."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from distill_ray import decompose
from distill_ray.config import ConfigError, DecomposeConfig, PromptConfig, TeacherConfig, VerifyConfig, VoteConfig, \
    load_config
from distill_ray.decomposition import (DECOMPOSE_PREFIX, SOLVER_PREFIX, decompose_expression, decomposed_exemplars,
                                       decomposed_program, split_program, split_row, training_rows)
from distill_ray.pipelines.decompose import decompose_stages
from distill_ray.prompts import Exemplar
from distill_ray.stages import check_flow
from distill_ray.stages.decompose import build_split, set_prefix, split_rows
from distill_ray.stages.prompt import build_prompts
from distill_ray.tasks import DIFFICULTIES, PROBLEM_COLUMNS, generate_puzzle, load_problems

SAT = "def sat(x: int) -> bool:\n    return (x + 11) * 4 - 8 == 116"
PROGRAM = decomposed_program("(116 + 8) // 4 - 11")


def run(sat: str, program: str):
    namespace = {}
    exec(sat + "\n" + program, namespace)
    return namespace["sat"](namespace["sol"]())


# ------------------------------------------------------------------ the multi-step family

@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_chain_is_solvable_in_steps_and_rejects_wrong_answers(difficulty):
    for seed in range(20):
        puzzle = generate_puzzle("chain", seed, difficulty)
        expression = puzzle.sol.split("return ", 1)[1]
        answer = eval(expression)
        namespace = {}
        exec(puzzle.sat, namespace)
        assert namespace["sat"](answer) is True, puzzle
        assert namespace["sat"](answer + 1) is False and namespace["sat"](answer - 1) is False, puzzle
        # One sub-question per operation to undo: 2, 3, 4; and the decomposition computes the same answer.
        assert len(decompose_expression(expression)) == difficulty + 1
        assert run(puzzle.sat, decomposed_program(expression)) is True


# ------------------------------------------------------------------ the format

def test_decomposition_names_each_intermediate_result():
    assert decompose_expression("(116 + 8) // 4 - 11") == [
        ("What is 116 + 8?", "116 + 8"), ("What is a1 // 4?", "a1 // 4"), ("What is a2 - 11?", "a2 - 11")]
    assert PROGRAM == ("def sol():\n    # 1. What is 116 + 8?\n    # 2. What is a1 // 4?\n    # 3. What is a2 - 11?\n"
                       "    a1 = 116 + 8\n    a2 = a1 // 4\n    a3 = a2 - 11\n    return a3\n")
    assert PROGRAM.startswith(DECOMPOSE_PREFIX) and run(SAT, PROGRAM) is True
    assert decompose_expression("12") is None and decompose_expression("'ab' *") is None
    shots = decomposed_exemplars([Exemplar(SAT, "def sol():\n    return (116 + 8) // 4 - 11", "chain"),
                                  Exemplar("q", "def sol():\n    return 'abc'", "x")])
    assert shots == [Exemplar(SAT, PROGRAM, "chain")]   # a literal answer has nothing to decompose


def test_a_verified_decomposition_splits_into_one_decomposer_and_one_solver_target():
    split = split_row(SAT, PROGRAM, True, min_steps=2)
    assert split["decomposer_target"] == "116 + 8?\n    # 2. What is a1 // 4?\n    # 3. What is a2 - 11?"
    assert split["solver_question"] == SAT + "\n\nSub-questions:\n1. What is 116 + 8?\n2. What is a1 // 4?\n" \
                                             "3. What is a2 - 11?"
    assert split["solver_target"] == "a1 = 116 + 8\n    a2 = a1 // 4\n    a3 = a2 - 11\n    return a3\n"
    # The two targets are the single student's, cut in two; the solver's program is the verified one's code.
    assert (DECOMPOSE_PREFIX + split["decomposer_target"] + "\n    " + split["solver_target"]) == PROGRAM
    assert run(SAT, SOLVER_PREFIX + split["solver_target"]) is True


@pytest.mark.parametrize("program, passed", [
    (PROGRAM, False),                                                     # refuted by the verifier
    (PROGRAM.replace("    # 2. What is a1 // 4?\n    # 3. What is a2 - 11?\n", ""), True),   # one sub-question
    ("def sol():\n    return (116 + 8) // 4 - 11\n", True),               # no decomposition at all
    (PROGRAM.replace("    return a3\n", ""), True),                        # code that never returns
    (PROGRAM.replace("# 2.", "# 5."), True),                              # numbering broken after the first
])
def test_anything_else_gives_no_rows(program, passed):
    assert split_row(SAT, program, passed, min_steps=2) is None


def test_split_program_stops_at_the_first_line_that_is_not_the_next_sub_question():
    assert split_program(PROGRAM)[0] == ["1. What is 116 + 8?", "2. What is a1 // 4?", "3. What is a2 - 11?"]
    assert split_program("def sol():\n    # 1. What is 3 + 4?\n    a1 = 3 + 4\n    # 2. What is a1 * 2?\n")[0] == \
        ["1. What is 3 + 4?"]
    assert split_program("def sol():\n") == ([], [])


# ------------------------------------------------------------------ the stages and the training rows

def candidates() -> pd.DataFrame:
    """Three candidate rows of one problem: a verified decomposition, a refuted one, a verified one-liner."""
    wrong = PROGRAM.replace("a2 - 11", "a2 + 11")
    return pd.DataFrame({"task_id": ["t"] * 3, "kind": ["p3"] * 3, "question": [SAT] * 3,
                         "program": [PROGRAM, wrong, "def sol():\n    return 20\n"], "passed": [True, False, True],
                         "keep": [True, False, True]})


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from distill_ray.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2"))


def test_training_rows_one_decomposer_and_one_solver_row_per_verified_decomposition(tokenizer):
    rows = split_rows(candidates(), min_steps=2)
    assert rows["decomposer_target"].notna().tolist() == [True, False, False]
    split = split_row(SAT, PROGRAM, True, 2)
    decomposer, solver, single = (training_rows(rows, tokenizer, role) for role in ("decomposer", "solver", "single"))
    assert len(decomposer) == len(solver) == len(single) == 1   # the same budget: the same one kept decomposition
    assert decomposer["target_text"][0] == split["decomposer_target"]
    assert solver["target_text"][0] == split["solver_target"]
    assert single["target_text"][0] == PROGRAM[len(DECOMPOSE_PREFIX):]
    # Zero-shot prompts: the decomposer's and the single student's are the same, ending at the prefix; the
    # solver's question carries the sub-questions.
    assert decomposer["prompt_text"][0] == single["prompt_text"][0]
    assert decomposer["prompt_text"][0].endswith(DECOMPOSE_PREFIX) and SAT in decomposer["prompt_text"][0]
    assert solver["prompt_text"][0].endswith(SOLVER_PREFIX)
    assert "Sub-questions:\n1. What is 116 + 8?\n2. What is a1 // 4?\n3. What is a2 - 11?" in solver["prompt_text"][0]
    with pytest.raises(ValueError, match="unknown decomposition student"):
        training_rows(rows, tokenizer, "critic")


def test_recipe_flow_is_checked_and_prefix_stage_wants_p3():
    teachers = [TeacherConfig()]
    stages = decompose_stages(teachers, PromptConfig(), VerifyConfig(), [], 0, VoteConfig())
    assert [s.name for s in stages] == ["prompt", "decompose_prefix", "teacher", "extract", "verify",
                                        "decompose_split", "vote"]
    columns = check_flow(PROBLEM_COLUMNS, stages)
    assert {"decomposer_target", "solver_question", "solver_target", "keep"} <= set(columns)
    assert [s.name for s in decompose_stages(teachers, PromptConfig(), VerifyConfig(), [], 0)][-1] == "verify"
    # The split reads the verifier's verdict: before verify the flow check refuses it.
    with pytest.raises(ValueError, match="decompose_split"):
        check_flow(PROBLEM_COLUMNS, [stages[0], build_split(2)])
    batch = pd.DataFrame({"kind": ["p3", "gsm8k"]})
    with pytest.raises(ValueError, match="p3"):
        set_prefix(batch, DECOMPOSE_PREFIX)
    assert set_prefix(batch.iloc[:1].copy(), SOLVER_PREFIX)["response_prefix"].tolist() == [SOLVER_PREFIX]


# ------------------------------------------------------------------ two-stage inference

def test_the_solver_is_asked_the_decomposers_sub_questions(monkeypatch, tmp_path):
    cfg = load_config(overrides=["task.families=[chain]", "task.difficulty=2", "task.num_train=2",
                                 "task.num_eval=2", "eval.samples=2", "eval.k=[1,2]", f"output_dir={tmp_path}"])
    _, problems = load_problems("puzzles", num_train=2, num_eval=2, families=["chain"], difficulty=2)
    monkeypatch.setattr(decompose, "load_task", lambda cfg: ([], [], problems))
    first, second = problems[0]["task_id"], problems[1]["task_id"]
    written = {first: ["def sol():\n    # 1. What is 3 + 4?\n    # 2. What is a1 * 2?\n", "def sol():\n    pass\n"],
               second: ["def sol():\n    # 1. What is 9 - 1?\n    # 2. What is a1 // 2?\n"] * 2}
    asked = {}

    def fake_sample(cfg, problems, label, model, prefix, samples=None):
        asked[label] = (problems, prefix, samples)
        if label == "decomposer":   # two decompositions of each problem
            return pd.DataFrame([{"task_id": t, "sample_index": i, "program": p, "passed": False}
                                 for t, programs in written.items() for i, p in enumerate(programs)])
        # The solver: the first problem's first decomposition leads to a verified program, nothing else does.
        return pd.DataFrame([{"task_id": p["task_id"], "sample_index": 0, "program": "", "passed":
                              p["task_id"] == f"{first}#0"} for p in problems])

    monkeypatch.setattr(decompose, "sample", fake_sample)
    results = decompose.evaluate_arms(cfg, {"decomposer": {"student": "D"}, "solver": {"student": "S"}})
    solver_problems, prefix, samples = asked["solver"]
    assert (asked["decomposer"][1], prefix, samples) == (DECOMPOSE_PREFIX, SOLVER_PREFIX, 1)
    assert [p["task_id"] for p in solver_problems] == [f"{first}#0", f"{first}#1", f"{second}#0", f"{second}#1"]
    assert solver_problems[0]["question"].endswith("Sub-questions:\n1. What is 3 + 4?\n2. What is a1 * 2?")
    assert solver_problems[0]["question"].startswith(problems[0]["question"])
    assert solver_problems[0]["sat"] == problems[0]["sat"]   # verified against the original problem
    assert solver_problems[2]["question"].endswith("1. What is 9 - 1?\n2. What is a1 // 2?")
    # The prompt the solver model reads holds the decomposer's output.
    prompts = build_prompts(pd.DataFrame(solver_problems[:1]), [], 0, "fixed", 0)
    assert "1. What is 3 + 4?\\n2. What is a1 * 2?" in prompts["messages"][0]
    assert json.loads(prompts["messages"][0])[-1]["content"] == solver_problems[0]["question"]
    # pass@k per original problem: 1 of 2 samples of the first, 0 of the second.
    assert results["decomposed"]["pass@1"]["mean"] == pytest.approx(0.25)
    assert results["decomposed"]["pass@2"]["mean"] == pytest.approx(0.5)
    assert results["decomposed"]["decompositions_with_min_steps"] == pytest.approx(0.75)


# ------------------------------------------------------------------ config

def test_decompose_config_validates():
    assert load_config().decompose == DecomposeConfig()
    assert load_config(overrides=["decompose.arms=[single]", "decompose.min_steps=3"]).decompose.min_steps == 3
    for bad, field in [("decompose.arms=[single, single]", "decompose"), ("decompose.arms=[]", "decompose.arms"),
                       ("decompose.arms=[critic]", "decompose.arms"), ("decompose.min_steps=0", "decompose.min_steps"),
                       ("decompose.steps=2", "decompose.steps")]:
        with pytest.raises(ConfigError, match=field):
            load_config(overrides=[bad])
    with pytest.raises(ValueError, match="task.source puzzles"):
        decompose.check_task(load_config(overrides=["task.source=gsm8k"]))
    decompose.check_task(load_config(overrides=["task.families=[chain]"]))
