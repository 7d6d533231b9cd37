import json

import pandas as pd
import pytest

from distill_ray.extract import extract_program
from distill_ray.stages.prompt import build_prompts
from distill_ray.prompts import Exemplar, build_messages, choose_exemplars, response_prefix

POOL = [Exemplar(f"def sat(x: int) -> bool:\n    return x + {i} == 10", f"def sol():\n    return 10 - {i}")
        for i in range(6)]


def test_messages_alternate_exemplars_then_question():
    messages = build_messages("p3", "Q", POOL[:2])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[-1]["content"] == "Q" and messages[2]["content"] == POOL[0].answer


def test_fixed_exemplars_skip_the_question_itself():
    shots = choose_exemplars(POOL, 3, "fixed", seed=0, question=POOL[0].question)
    assert shots == POOL[1:4]


def test_random_exemplars_are_seeded_per_question():
    a = choose_exemplars(POOL, 3, "random", seed=1, question="q1")
    assert a == choose_exemplars(POOL, 3, "random", seed=1, question="q1")
    draws = {tuple(s.question for s in choose_exemplars(POOL, 3, "random", seed=1, question=f"q{i}")) for i in range(20)}
    assert len(draws) > 1


def test_retrieved_exemplars_prefer_the_same_family_then_similar_text():
    pool = [Exemplar("def sat(s: str) -> bool:\n    return s == 'ab' * 3", "def sol():\n    return 'ab' * 3", "repeat"),
            Exemplar("def sat(x: int) -> bool:\n    return x * 3 == 12", "def sol():\n    return 12 // 3", "mul"),
            Exemplar("def sat(x: int) -> bool:\n    return x + 3 == 12", "def sol():\n    return 12 - 3", "add"),
            Exemplar("def sat(x: int) -> bool:\n    return x + 5 == 9", "def sol():\n    return 9 - 5", "add")]
    question = "def sat(x: int) -> bool:\n    return x + 1 == 2"
    shots = choose_exemplars(pool, 3, "retrieved", seed=0, question=question, family="add")
    assert [s.family for s in shots] == ["add", "add", "mul"]  # the int puzzle beats the string one
    with pytest.raises(ValueError, match="retrieved"):
        choose_exemplars(pool, 3, "nearest", seed=0)


def test_retrieval_ranks_by_bm25_within_a_family():
    # The query shares its rare tokens (`li`, `list`, `len`) with the long exemplar "b"; identifier overlap
    # (Jaccard) ranks the short "a" first (0.64 vs 0.48: b's extra tokens inflate the union), BM25 ranks b.
    pool = [Exemplar("def sat(x: int) -> bool:\n    return x == 1", "a", "f"),
            Exemplar("def sat(li: list) -> bool:\n    return len(li) == 3 and all(i in range(9) for i in li) "
                     "and sum(li) > min(li) + max(li) or any(li)", "b", "f"),
            Exemplar("def sat(s: str) -> bool:\n    return s.count('a') == 2", "c", "f"),
            Exemplar("def sat(x: int) -> bool:\n    return x > 3", "d", "f")]
    question = "def sat(li: list) -> bool:\n    return len(li) == 5"
    shots = choose_exemplars(pool, 2, "retrieved", seed=0, question=question, family="f")
    assert [s.answer for s in shots] == ["b", "a"]
    assert pool[0] not in choose_exemplars(pool, 3, "retrieved", seed=0, question=pool[0].question, family="f")


def test_plain_prompt_style_is_few_shot_text_without_a_template():
    from distill_ray.prompts import render_plain

    text = render_plain(build_messages("p3", "Q", POOL[:1]), "def sol():\n    return ")
    assert text.startswith("You solve Python programming puzzles.")
    assert f"Problem:\n{POOL[0].question}\n\nSolution:\n{POOL[0].answer}\n\n" in text
    assert text.endswith("Problem:\nQ\n\nSolution:\ndef sol():\n    return ") and "<|im_start|>" not in text


def test_prompt_stage_writes_messages_and_prefix():
    batch = pd.DataFrame({"kind": ["p3", "gsm8k"], "question": ["Q1", "Q2"], "family": ["f", "g"]})
    out = build_prompts(batch, POOL, num_shots=2, strategy="fixed", seed=0)
    assert len(json.loads(out["messages"][0])) == 6
    assert list(out["response_prefix"]) == ["def sol():\n    return ", "def solution():\n"]
    zero_shot = build_prompts(batch.copy(), POOL, num_shots=0, strategy="fixed", seed=0)
    assert len(json.loads(zero_shot["messages"][0])) == 2


def test_extract_keeps_the_function_and_drops_what_follows():
    prefix = "def sol():\n    return "
    assert extract_program(prefix, "19 - 7\n\nprint(sol())") == "def sol():\n    return 19 - 7\n"
    assert extract_program(prefix, "'ab' * 3\n```\nExplanation") == "def sol():\n    return 'ab' * 3\n"
    body = "    a = 3\n    b = 4\n    return a * b\ndef other():\n    pass"
    assert extract_program("def solution():\n", body) == "def solution():\n    a = 3\n    b = 4\n    return a * b\n"


def test_extract_without_prefix_strips_an_opening_fence():
    completion = "```python\ndef sol():\n    return 5\n```\nDone."
    assert extract_program("", completion) == "def sol():\n    return 5\n"


def test_render_uses_the_chat_template_or_plain_turns():
    from distill_ray.prompts import render

    class Plain:
        chat_template = None

    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert render(Plain(), messages, "def sol():\n    return ") == "S\n\nQ\n\ndef sol():\n    return "


def test_a_body_written_flush_left_after_def_is_indented_up_to_its_return():
    prefix = "def solution():\n"
    completion = "apples = 3\nbought = 4\n\nreturn apples + bought\nprint(solution())\n"
    program = extract_program(prefix, completion)
    assert program == "def solution():\n    apples = 3\n    bought = 4\n\n    return apples + bought\n"
    namespace = {}
    exec(program, namespace)
    assert namespace["solution"]() == 7
    # An indented body is left as it is, and chatter after the function is still dropped.
    assert extract_program(prefix, "    return 7\nThat is all.") == "def solution():\n    return 7\n"


HUMANEVAL_PROMPT = 'from typing import List\n\n\ndef double(xs: List[int]) -> List[int]:\n    """Each doubled."""\n'


def test_an_asserts_question_that_is_code_is_continued_and_prose_gets_no_prefix():
    assert response_prefix("asserts", HUMANEVAL_PROMPT) == HUMANEVAL_PROMPT
    assert response_prefix("asserts", "Write a function to double a list.\nassert double([1]) == [2]") == ""
    assert response_prefix("p3", HUMANEVAL_PROMPT) == "def sol():\n    return "


def test_asserts_extraction_keeps_helpers_and_imports_and_cuts_at_top_level_code():
    completion = ("    return [helper(x) for x in xs]\n\n\nimport math\n\n\ndef helper(x):\n    # twice\n"
                  "    return 2 * x\n\n\nprint(double([1, 2]))\nassert double([1]) == [2]\n")
    program = extract_program(HUMANEVAL_PROMPT, completion, kind="asserts")
    assert program.startswith(HUMANEVAL_PROMPT) and "print(" not in program and "assert" not in program
    namespace = {}
    exec(program, namespace)
    assert namespace["double"]([1, 2]) == [2, 4]
    cut = extract_program(HUMANEVAL_PROMPT, "    return xs\n\nif __name__ == '__main__':\n    main()\n", "asserts")
    assert cut == HUMANEVAL_PROMPT + "    return xs\n"


def test_asserts_extraction_without_prefix_takes_the_first_fenced_block_of_a_chat_answer():
    answer = ("Sure! Here is the function:\n```python\ndef double(xs):\n    return [2 * x for x in xs]\n```\n"
              "It doubles each element.\n```python\nprint(double([1]))\n```")
    assert extract_program("", answer, "asserts") == "def double(xs):\n    return [2 * x for x in xs]\n"
    assert extract_program("", "def f():\n    return 1\nf()\n", "asserts") == "def f():\n    return 1\n"
    assert extract_program("", "I cannot help with that.", "asserts") == ""
