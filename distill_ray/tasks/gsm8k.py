"""GSM8K as program-of-thought problems: the model writes ``def solution(): ... return result``.

Malformed lines are never fatal and never dropped silently: they are returned as quarantine records
``{"line": n (1-based), "reason": str, "raw": the line's first 200 characters}``.

Each problem's ``reference`` is rebuilt from the answer's calculator annotations ``<<expr=value>>`` as Python
lines, one variable per step, and kept only when it evaluates to the ``#### N`` number; otherwise it is
``return N``. Prompts should prefer the hand-written ``GSM8K_EXEMPLARS`` below, which read like real programs.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from pathlib import Path

from distill_ray.tasks.schema import json_object, make_problem

SOURCE = "gsm8k"
FILE_SPLITS = {"train": "train", "test": "eval", "eval": "eval"}   # file stem or alias -> problem split

_FINAL = re.compile(r"####\s*(.*?)\s*$")
_ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]*)>>")
_QUESTION_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant,
                  ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd)
_MAX_EXPONENT = 64   # keeps a hostile or mistyped ``**`` from building astronomically large numbers


def _program(steps: list[str], result: str) -> str:
    body = "".join(f"    {line}\n" for line in steps)
    return f"def solution():\n{body}    result = {result}\n    return result"


# PAL-style exemplars (Gao et al., 2022): named variables, one fact per line. The questions are the
# chain-of-thought few-shot questions of Wei et al. (2022), not GSM8K test items.
_EXEMPLARS = [
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     ["money_initial = 23", "bagels = 5", "bagel_cost = 3", "money_spent = bagels * bagel_cost"],
     "money_initial - money_spent", 8.0),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. "
     "How many golf balls did he have at the end of wednesday?",
     ["golf_balls_initial = 58", "golf_balls_lost_tuesday = 23", "golf_balls_lost_wednesday = 2"],
     "golf_balls_initial - golf_balls_lost_tuesday - golf_balls_lost_wednesday", 33.0),
    ("There were nine computers in the server room. Five more computers were installed each day, from "
     "monday to thursday. How many computers are now in the server room?",
     ["computers_initial = 9", "computers_per_day = 5", "num_days = 4  # monday to thursday",
      "computers_added = computers_per_day * num_days"],
     "computers_initial + computers_added", 29.0),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. "
     "How many toys does he have now?",
     ["toys_initial = 5", "toys_from_mom = 2", "toys_from_dad = 2"],
     "toys_initial + toys_from_mom + toys_from_dad", 9.0),
]

GSM8K_EXEMPLARS: list[dict] = [
    make_problem(task_id=f"gsm8k/exemplar/{i}", split="train", source=SOURCE, family="exemplar", difficulty=1,
                 kind="gsm8k", question=question, expected=expected, reference=_program(steps, result))
    for i, (question, steps, result, expected) in enumerate(_EXEMPLARS)
]


def gsm8k_file(path: str | Path, split: str) -> Path:
    """``path`` is the GSM8K directory (holding train.jsonl / test.jsonl) or one .jsonl file."""
    if split not in FILE_SPLITS:
        raise ValueError(f"gsm8k split must be one of {sorted(FILE_SPLITS)}, got {split!r}")
    path = Path(path)
    if path.is_file():
        return path
    stem = "test" if FILE_SPLITS[split] == "eval" else "train"
    file = path / f"{stem}.jsonl"
    if not file.is_file():
        raise ValueError(f"gsm8k file not found: {file} (path must be the directory with train.jsonl/test.jsonl)")
    return file


def load_gsm8k(path: str | Path, split: str) -> tuple[list[dict], list[dict]]:
    """(problems, quarantined) from one GSM8K file; task_id is "gsm8k/<stem>/<0-based line index>"."""
    file = gsm8k_file(path, split)
    problem_split = FILE_SPLITS[split]
    problems, quarantined = [], []
    # Binary read, decoded line by line: one line of bad bytes is quarantined instead of failing the file.
    with open(file, "rb") as handle:
        for index, raw in enumerate(handle):
            try:
                question, expected, reference = parse_record(raw.decode("utf-8"))
            except ValueError as error:   # UnicodeDecodeError is a ValueError too
                text = raw.decode("utf-8", errors="replace")
                quarantined.append({"line": index + 1, "reason": str(error), "raw": text[:200]})
                continue
            problems.append(make_problem(
                task_id=f"{SOURCE}/{file.stem}/{index}", split=problem_split, source=SOURCE, family=SOURCE,
                difficulty=1, kind="gsm8k", question=question, expected=expected, reference=reference))
    return problems, quarantined


def parse_record(line: str) -> tuple[str, float, str]:
    """(question, expected, reference) of one JSON line; ValueError with the reason when malformed."""
    record = json_object(line)
    question, answer = record.get("question"), record.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("missing or empty 'question'")
    if not isinstance(answer, str):
        raise ValueError("missing or non-string 'answer'")
    expected = final_number(answer)
    return question, expected, reference_program(question, answer, expected)


def final_number(answer: str) -> float:
    """The N of the answer's last line ``#### N``, commas removed; ValueError if absent or not finite."""
    lines = answer.rstrip().splitlines()
    match = _FINAL.search(lines[-1]) if lines else None
    if match is None:
        raise ValueError("answer has no final '#### N' line")
    text = match.group(1).replace(",", "")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"final answer {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"final answer {text!r} is not finite")
    return value


def reference_program(question: str, answer: str, expected: float) -> str:
    """A solution() built from the calculator annotations, or ``return N`` when they do not reproduce N."""
    steps = _annotation_steps(answer)
    given = {float(n) for n in _QUESTION_NUMBER.findall(question.replace(",", ""))}
    for substitute in (True, False):
        program = _steps_program(steps, given if substitute else None, expected)
        if program is not None:
            return program
    number = int(expected) if expected.is_integer() else expected
    return f"def solution():\n    return {number}"


def _annotation_steps(answer: str) -> list[ast.expr]:
    """Parsed, validated annotation expressions in order; ones Python cannot read safely are skipped."""
    steps = []
    for expr, _value in _ANNOTATION.findall(answer):
        text = expr.replace(",", "").replace("$", "").replace("x", "*").replace("^", "**").strip()
        try:
            tree = ast.parse(text, mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):   # not Python, null bytes, too deep
            continue
        if _safe(tree):
            steps.append(tree.body)
    return steps


def _safe(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            return False
        if isinstance(node, ast.Constant) and type(node.value) not in (int, float):
            return False
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            exponent = node.right
            if not (isinstance(exponent, ast.Constant) and abs(exponent.value) <= _MAX_EXPONENT):
                return False
    return True


def _steps_program(steps: list[ast.expr], given: set[float] | None, expected: float) -> str | None:
    """Program ``step1 = ...; ...; result = stepK`` ending at the last step worth ``expected``, or None.

    Unless ``given`` is None, a literal equal to an earlier step's value becomes that step's name (a data flow
    a reader can follow), except numbers ``given`` in the question, which most likely mean themselves.
    Rounding in the annotations can make a substitution change the result, hence the retry without.
    """
    nodes, values = [], []
    answer_step = None
    for step in steps:
        if given is not None:
            step = _substitute(step, values, given)
        try:
            value = _evaluate(step, values)
        except (ArithmeticError, ValueError, TypeError):
            return None
        nodes.append(step)
        values.append(value)
        if _close(value, expected):
            answer_step = len(values)
    if answer_step is None:
        return None
    lines = [f"step{i + 1} = {ast.unparse(node)}" for i, node in enumerate(nodes[:answer_step])]
    return _program(lines, f"step{answer_step}")


def _substitute(node: ast.expr, values: list, given: set[float]) -> ast.expr:
    """A copy of ``node`` with literals equal to an earlier step's value (latest first) named ``stepN``."""
    if isinstance(node, ast.BinOp):
        return ast.BinOp(_substitute(node.left, values, given), node.op, _substitute(node.right, values, given))
    if isinstance(node, ast.UnaryOp):
        return ast.UnaryOp(node.op, _substitute(node.operand, values, given))
    if isinstance(node, ast.Constant) and node.value not in given:
        for i in range(len(values) - 1, -1, -1):
            if values[i] == node.value:
                return ast.Name(id=f"step{i + 1}")
    return node


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def _evaluate(node: ast.expr, values: list):
    """Value of a validated step; a direct walk is both safe and much faster than compile + eval."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[int(node.id[4:]) - 1]
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, values))
    return _BINARY[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))


def _close(value, expected: float) -> bool:
    return isinstance(value, (int, float)) and abs(value - expected) <= 1e-6 * max(1.0, abs(expected))
