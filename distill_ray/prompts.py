"""Few-shot prompts: exemplars chosen from a pool, turned into chat messages plus a response prefix.

A prompt is kept as chat ``messages`` (model-agnostic); each engine renders it with its own chat template.
The response prefix (``def sol():\\n    return ``) is appended after the template: it pins the answer's
format, which is what makes a 135M teacher's samples verifiable at all (measured: 0 of 96 verified with
literal-answer prompts, ~30% with expression exemplars and this prefix).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SYSTEMS = {
    "p3": (
        "You solve Python programming puzzles. Given a function sat, write a function sol() that returns "
        "a value x such that sat(x) is True. Reply with code only."
    ),
    "gsm8k": (
        "You solve grade-school math word problems by writing a Python function solution() that computes "
        "and returns the final number. Reply with code only."
    ),
    "asserts": (
        "You write correct, self-contained Python functions. Complete the function, or write the function the "
        "task describes so that its tests pass. Reply with code only."
    ),
}
RESPONSE_PREFIXES = {"p3": "def sol():\n    return ", "gsm8k": "def solution():\n"}


@dataclass(frozen=True)
class Exemplar:
    question: str
    answer: str  # the full program, as the model should write it
    family: str = ""


def response_prefix(kind: str, question: str = "") -> str:
    """What the answer starts with. ``asserts``: a question that is code (HumanEval's signature and docstring)
    is continued as the model's own text, the way HumanEval is meant to be prompted; a prose task (MBPP) gets
    no prefix, the model writes the whole function."""
    if kind == "asserts":
        return question if _is_code(question) else ""
    return RESPONSE_PREFIXES.get(kind, "")


def _is_code(text: str) -> bool:
    import ast

    try:
        return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) for node in ast.parse(text).body)
    except SyntaxError:
        return False


def build_messages(kind: str, question: str, exemplars: list[Exemplar]) -> list[dict]:
    """System instruction, one user/assistant turn per exemplar, then the question."""
    messages = [{"role": "system", "content": SYSTEMS[kind]}]
    for shot in exemplars:
        messages.append({"role": "user", "content": shot.question})
        messages.append({"role": "assistant", "content": shot.answer})
    messages.append({"role": "user", "content": question})
    return messages


# A plain-text answer ends where the model starts the next problem (base models never stop by themselves there).
PLAIN_STOP = ("\nProblem:",)


def render_plain(messages: list[dict], prefix: str = "") -> str:
    """Few-shot text for base models (no chat template): the instruction, then ``Problem:``/``Solution:``
    pairs, ending where the model writes the solution; ``prompt_style: plain`` in a teacher's config."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"] + "\n\n")
        elif m["role"] == "user":
            parts.append(f"Problem:\n{m['content']}\n\nSolution:\n")
        else:
            parts.append(m["content"].rstrip("\n") + "\n\n")
    return "".join(parts) + prefix


def default_bos(tokenizer) -> str:
    """The BOS text the tokenizer would add by default ('<bos>' for Gemma, nothing for SmolLM2). Engines
    tokenize rendered prompts without special tokens (chat templates carry their own), so plain prompts
    put it in themselves: Gemma without its BOS degrades badly."""
    if tokenizer is None or not getattr(tokenizer, "bos_token", None):
        return ""
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    return tokenizer.bos_token if ids[:1] == [tokenizer.bos_token_id] else ""


def render_plain_prompt(tokenizer, messages: list[dict], prefix: str = "") -> str:
    """A plain (``prompt_style: plain``) prompt as the model reads it: its default BOS, then the few-shot text."""
    return default_bos(tokenizer) + render_plain(messages, prefix)


def render(tokenizer, messages: list[dict], prefix: str = "") -> str:
    """The exact text a model continues: its chat template (plain turns if it has none) + the prefix.
    Teachers and the student's training rows both render through here, so they see the same format."""
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "".join(f"{m['content']}\n\n" for m in messages)
    return text + prefix


def exemplar_pool(problems: list[dict]) -> list[Exemplar]:
    """Exemplars from problems that carry a reference program (train split only: never leak eval)."""
    return [Exemplar(p["question"], p["reference"], p["family"])
            for p in problems if p["reference"] and p["split"] == "train"]


def choose_exemplars(pool: list[Exemplar], k: int, strategy: str, seed: int, question: str = "",
                     family: str = "", retriever=None) -> list[Exemplar]:
    """k exemplars for ``question`` (never the question itself).

    ``fixed``: the same first k for every prompt; ``random``: k drawn per prompt, seeded by its question;
    ``retrieved``: the most similar ones: same family first, then BM25 score of the question against the
    exemplar's question, then identifier overlap (ties); ``learned``: the top k by a retriever trained from the
    teacher's likelihoods (``epr.py``; ``retriever``: an ``epr.Retriever`` or the directory it was saved in).
    """
    candidates = [shot for shot in pool if shot.question != question]
    if strategy == "fixed":
        return candidates[:k]
    if strategy == "random":
        return random.Random(f"{seed}:{question}").sample(candidates, min(k, len(candidates)))
    if strategy == "retrieved":
        scores = _bm25(tuple(pool)).scores(question)
        words = _words(question)
        ranked = sorted(range(len(pool)), key=lambda i: (pool[i].family != family, -scores[i],
                                                         -_overlap(words, _words(pool[i].question))))
        return [pool[i] for i in ranked if pool[i].question != question][:k]
    if strategy == "learned":
        if retriever is None:
            raise ValueError("exemplar strategy 'learned' needs a retriever (prompt.retriever: the directory "
                             "`distill-ray retriever --out DIR` wrote)")
        if isinstance(retriever, (str, Path)):
            from distill_ray.epr import load_retriever

            retriever = load_retriever(retriever)
        return retriever.top_k(pool, question, k)
    raise ValueError(f"unknown exemplar strategy {strategy!r} (use 'fixed', 'random', 'retrieved' or 'learned')")


class _BM25:
    """BM25 (``bm25s``) over the exemplar pool's questions, tokenized as code: identifiers and operator
    runs, numbers left out (puzzles of one shape differ only in their constants)."""

    def __init__(self, questions: list[str]):
        import bm25s

        self.size = len(questions)
        self.index = bm25s.BM25()
        # bm25s's own tokenizer splits prose; code needs its identifiers and operators kept.
        self.index.index([_tokens(q) or ["<empty>"] for q in questions] or [["<empty>"]], show_progress=False)

    def scores(self, question: str) -> list[float]:
        tokens = _tokens(question)
        return list(self.index.get_scores(tokens))[: self.size] if tokens and self.size else [0.0] * self.size


@lru_cache(maxsize=8)
def _bm25(pool: tuple[Exemplar, ...]) -> _BM25:
    return _BM25([shot.question for shot in pool])  # built once per pool, not once per prompt


def _tokens(text: str) -> list[str]:
    return re.findall(r"[A-Za-z_]\w*|[^\sA-Za-z_\d]+", text)


def _words(text: str) -> set[str]:
    return set(_tokens(text))


def _overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0
