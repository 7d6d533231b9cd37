"""The problems of an on-policy run, as the loop needs them: the student's zero-shot prompt, each teacher's
prompt (few-shot or the student's own, ``on_policy.teacher_context``), and the fields of the problem's check."""

from __future__ import annotations

from distill_ray.config import PromptConfig
from distill_ray.prompts import Exemplar, build_messages, choose_exemplars, render, render_plain_prompt, response_prefix

CHECK_FIELDS = ("kind", "sat", "ans_type", "expected", "tests", "entry_point", "source")


def on_policy_problems(problems: list[dict], exemplars: list[Exemplar], student_tokenizer, teacher_tokenizers: list,
                       prompt: PromptConfig, seed: int, teacher_context: str = "few_shot",
                       teacher_styles: list[str] | None = None) -> list[dict]:
    """``teacher_styles``: each teacher's ``prompt_style`` (chat: its chat template; plain: few-shot text after
    its BOS, as the teacher stage renders it)."""
    styles = teacher_styles or ["chat"] * len(teacher_tokenizers)
    out = []
    for problem in problems:
        kind, question = problem["kind"], problem["question"]
        prefix = response_prefix(kind, question)
        shots = (choose_exemplars(exemplars, prompt.num_shots, prompt.exemplars, seed, question, problem.get("family"))
                 if teacher_context == "few_shot" and prompt.num_shots else [])
        teacher_messages = build_messages(kind, question, shots)
        out.append({
            "task_id": problem["task_id"],
            "student_prompt": render(student_tokenizer, build_messages(kind, question, []), prefix),
            "teacher_prompts": [render_plain_prompt(t, teacher_messages, prefix) if style == "plain"
                                else render(t, teacher_messages, prefix)
                                for t, style in zip(teacher_tokenizers, styles)],
            "check": {**{name: problem.get(name) for name in CHECK_FIELDS}, "response_prefix": prefix},
        })
    return out
