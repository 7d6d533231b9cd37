"""The decomposition format: a puzzle's answer as numbered sub-questions, then a program whose intermediate
variables answer them, and how one verified such program becomes a decomposer row and a solver row.

    def sol():
        # 1. What is 116 + 8?
        # 2. What is a1 // 4?
        # 3. What is a2 - 11?
        a1 = 116 + 8
        a2 = a1 // 4
        a3 = a2 - 11
        return a3

The teacher writes all of it (few-shot exemplars in this form, the prefix ``DECOMPOSE_PREFIX``); the single
CoT/program student learns all of it; the decomposer learns the comment block (the same prompt), the solver the
code after it, given the problem and the sub-questions as its question (``solver_question``). Sub-questions
come first, as one block, so the split is a cut, not a rewrite: the two targets together are the single
student's target.
"""

from __future__ import annotations

import ast
import re

from distill_ray.prompts import Exemplar

# The opening every decomposition starts with: it pins the format (numbered sub-questions in comments), as
# ``def sol():\n    return `` does for one-line answers.
DECOMPOSE_PREFIX = "def sol():\n    # 1. What is "
SOLVER_PREFIX = "def sol():\n    "
SUBQUESTION = re.compile(r"\s*# (\d+)\. (.+?)\s*$")
SUBQUESTIONS_HEADER = "Sub-questions:"


def decompose_expression(expression: str) -> list[tuple[str, str]] | None:
    """(sub-question, its code) per operation of ``expression``, innermost first; ``a<i>`` names the answer of
    sub-question i. None for what is not an arithmetic expression (or has no operation)."""
    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError:
        return None
    steps: list[tuple[str, str]] = []

    def walk(node: ast.expr) -> ast.expr:
        if not isinstance(node, ast.BinOp):
            return node
        step = ast.BinOp(walk(node.left), node.op, walk(node.right))
        text = ast.unparse(step)
        steps.append((f"What is {text}?", text))
        return ast.Name(f"a{len(steps)}")

    walk(tree)
    return steps or None


def decomposed_program(expression: str) -> str | None:
    """The decomposition of a one-line answer (``def sol():\\n    return EXPR``'s EXPR), or None."""
    steps = decompose_expression(expression)
    if steps is None:
        return None
    comments = [f"    # {i}. {question}" for i, (question, _) in enumerate(steps, 1)]
    code = [f"    a{i} = {text}" for i, (_, text) in enumerate(steps, 1)]
    return "\n".join(["def sol():", *comments, *code, f"    return a{len(steps)}"]) + "\n"


def decomposed_exemplars(pool: list[Exemplar]) -> list[Exemplar]:
    """The pool's exemplars whose answers decompose, rewritten as decompositions (the teacher's few shots)."""
    out = []
    for shot in pool:
        expression = shot.answer.split("return ", 1)[-1].strip()
        program = decomposed_program(expression)
        if program is not None:
            out.append(Exemplar(shot.question, program, shot.family))
    return out


def split_program(program: str) -> tuple[list[str], list[str]]:
    """(sub-questions, code lines) of a decomposition: the leading numbered comment lines of the function body
    (``1. What is ...?``, numbered 1, 2, ... in order) and the body's lines after them, indentation kept."""
    body = program.splitlines()[1:]
    subquestions = []
    for line in body:
        match = SUBQUESTION.match(line)
        if not match or int(match.group(1)) != len(subquestions) + 1:
            break
        subquestions.append(f"{match.group(1)}. {match.group(2)}")
    code = [line for line in body[len(subquestions):] if line.strip()]
    return subquestions, code


def solver_question(question: str, subquestions: list[str]) -> str:
    """What the solver is asked: the problem, then the decomposer's sub-questions."""
    return "\n".join([question, "", SUBQUESTIONS_HEADER, *subquestions])


def split_row(question: str, program: str, passed: bool, min_steps: int) -> dict | None:
    """The decomposer's and the solver's targets (and the solver's question) from one candidate: only a verified
    program with at least ``min_steps`` sub-questions followed by code that returns; None otherwise."""
    if not passed or not program.startswith(DECOMPOSE_PREFIX):
        return None
    subquestions, code = split_program(program)
    if len(subquestions) < min_steps or not any(line.strip().startswith("return") for line in code):
        return None
    comments = "\n".join(program.splitlines()[: 1 + len(subquestions)])   # the header and the comment block
    return {"decomposer_target": comments[len(DECOMPOSE_PREFIX):],
            "solver_question": solver_question(question, subquestions),
            "solver_target": "\n".join(code).strip() + "\n"}


def training_rows(rows, tokenizer, role: str):
    """The training view of a split dataset's kept decompositions for one student (``single``, ``decomposer``,
    ``solver``): zero-shot prompts rendered as the student will see them, and what it must write."""
    import pandas as pd

    from distill_ray.prompts import build_messages, render

    rows = rows[rows["keep"] & rows["decomposer_target"].notna()]
    if role == "solver":
        questions, prefix, targets = rows["solver_question"], SOLVER_PREFIX, list(rows["solver_target"])
    elif role == "decomposer":
        questions, prefix, targets = rows["question"], DECOMPOSE_PREFIX, list(rows["decomposer_target"])
    elif role == "single":
        questions, prefix = rows["question"], DECOMPOSE_PREFIX
        targets = [program[len(DECOMPOSE_PREFIX):] for program in rows["program"]]
    else:
        raise ValueError(f"unknown decomposition student {role!r} (single, decomposer or solver)")
    prompts = [render(tokenizer, build_messages("p3", q, []), prefix) for q in questions]
    return pd.DataFrame({"task_id": list(rows["task_id"]), "prompt_text": prompts, "target_text": targets})
