"""Teacher-written puzzles: a teacher sees a few real P3 puzzles and writes a new puzzle ``sat`` and solution ``sol``.

Everything the teacher writes is untrusted, the puzzle included: the job verifies ``sat(sol())`` in the sandbox
with the untrusted-sat path, rejects the pair when ``sat`` of its answer type's default value is also True
(trivial), and deduplicates it (exact and near-duplicate) against everything kept. This module only builds
prompts and turns completions into rows, each with its fate so far (``reject``: "" or a reason).
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

from distill_ray.tasks.p3 import read_p3, reference_of

RESPONSE_PREFIX = "```python\ndef sat("
INSTRUCTION = ("Each Python programming puzzle below is a function `sat` that returns True for a correct "
               "answer, followed by a function `sol()` that returns such an answer.\n\n{examples}\n\n"
               "Write one new puzzle, different from these, and its solution `sol()`, in the same format.")
MAX_EXAMPLE_CHARS = 300   # short puzzles only: the teacher's context is small and short examples get copied less
# Default value of each answer type: a puzzle whose sat accepts it is trivial.
DEFAULTS = {"int": "0", "str": "''", "float": "0.0", "bool": "False"}
ALIASES = {"f": "sat", "g": "sol"}   # the P3 paper's names for puzzle and solution


def example_pool(p3_path: str | Path) -> list[tuple[str, str]]:
    """(sat, sol) of short P3 train puzzles that ship a solution, in file order."""
    records, split = read_p3(p3_path)
    train = set(split["train"])
    pool = []
    for r in records:
        sol = reference_of(r)
        if r["name"].split(":", 1)[0] in train and sol and len(r["sat"]) + len(sol) <= MAX_EXAMPLE_CHARS:
            pool.append((r["sat"].strip(), sol.strip()))
    if not pool:
        raise ValueError(f"no short P3 train puzzles with solutions in {p3_path}")
    return pool


def prompt_messages(pool: list[tuple[str, str]], prompt_index: int, shots: int, seed: int) -> list[dict]:
    """The chat messages of teacher prompt ``prompt_index``: ``shots`` examples drawn from the pool (seeded)."""
    rng = random.Random(f"synth-teacher/{seed}/{prompt_index}")
    examples = rng.sample(pool, min(shots, len(pool)))
    text = "\n\n".join(f"```python\n{sat}\n\n{sol}\n```" for sat, sol in examples)
    return [{"role": "user", "content": INSTRUCTION.format(examples=text)}]


def default_answer(ans_type: str) -> str | None:
    """Source of the default value of a P3 answer type ([] for every list type); None if unsupported."""
    t = ans_type.replace(" ", "")
    if t.startswith(("List[", "list[")):
        return "[]"
    return DEFAULTS.get(t)


def parse_prefix(text: str) -> ast.Module | None:
    """The longest prefix of whole lines that parses (a completion often ends mid-statement)."""
    lines = text.split("\n")
    for end in range(len(lines), 0, -1):
        try:
            return ast.parse("\n".join(lines[:end]))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    return None


class _Rename(ast.NodeTransformer):
    def visit_FunctionDef(self, node):
        node.name = ALIASES.get(node.name, node.name)
        self.generic_visit(node)
        return node

    def visit_Name(self, node):
        node.id = ALIASES.get(node.id, node.id)
        return node


def parse_pair(completion: str) -> tuple[str, str, str, str]:
    """(sat source, sol source, ans_type, reject reason or "") from a completion of ``RESPONSE_PREFIX``."""
    text = RESPONSE_PREFIX.split("\n", 1)[1] + completion.split("```", 1)[0]
    tree = parse_prefix(text)
    if tree is None:
        return "", "", "", "unparsable"
    tree = _Rename().visit(tree)
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    if "sat" not in funcs or "sol" not in funcs:
        return "", "", "", "missing_sat_or_sol"
    sat_fn, sol_fn = funcs["sat"], funcs["sol"]
    head = "".join(ast.unparse(n) + "\n" for n in imports)
    sat, sol = head + ast.unparse(sat_fn), head + ast.unparse(sol_fn)
    if not sat_fn.args.args or sat_fn.args.args[0].annotation is None:
        return sat, sol, "", "no_answer_type"
    ans_type = ast.unparse(sat_fn.args.args[0].annotation)
    if default_answer(ans_type) is None:
        return sat, sol, ans_type, "unsupported_answer_type"
    return sat, sol, ans_type, ""
