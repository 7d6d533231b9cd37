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

SYSTEMS = {
    "p3": (
        "You solve Python programming puzzles. Given a function sat, write a function sol() that returns "
        "a value x such that sat(x) is True. Reply with code only."
    ),
    "gsm8k": (
        "You solve grade-school math word problems by writing a Python function solution() that computes "
        "and returns the final number. Reply with code only."
    ),
}
RESPONSE_PREFIXES = {"p3": "def sol():\n    return ", "gsm8k": "def solution():\n"}


@dataclass(frozen=True)
class Exemplar:
    question: str
    answer: str  # the full program, as the model should write it
    family: str = ""


def response_prefix(kind: str) -> str:
    return RESPONSE_PREFIXES.get(kind, "")


def build_messages(kind: str, question: str, exemplars: list[Exemplar]) -> list[dict]:
    """System instruction, one user/assistant turn per exemplar, then the question."""
    messages = [{"role": "system", "content": SYSTEMS[kind]}]
    for shot in exemplars:
        messages.append({"role": "user", "content": shot.question})
        messages.append({"role": "assistant", "content": shot.answer})
    messages.append({"role": "user", "content": question})
    return messages


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
                     family: str = "") -> list[Exemplar]:
    """k exemplars for ``question`` (never the question itself).

    ``fixed``: the same first k for every prompt; ``random``: k drawn per prompt, seeded by its question;
    ``retrieved``: the most similar ones: same family first, then by identifier overlap with the question.
    """
    candidates = [shot for shot in pool if shot.question != question]
    if strategy == "fixed":
        return candidates[:k]
    if strategy == "random":
        return random.Random(f"{seed}:{question}").sample(candidates, min(k, len(candidates)))
    if strategy == "retrieved":
        words = _words(question)
        return sorted(candidates, key=lambda shot: (shot.family != family, -_overlap(words, _words(shot.question))))[:k]
    raise ValueError(f"unknown exemplar strategy {strategy!r} (use 'fixed', 'random' or 'retrieved')")


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_]\w*|[^\sA-Za-z_\d]+", text))


def _overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0
