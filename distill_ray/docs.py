"""The README's generated sections: the stage tables, the problem columns and the config reference, built from
the stages' declarations and the config models, so the README cannot drift from the code (a test compares).

A section sits between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``; ``distill-ray docs``
(``make docs``) rewrites every section in place.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from distill_ray.markdown import table

README = Path(__file__).resolve().parent.parent / "README.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")   # a stage name like "teachers[a | b]" inside a table cell


def _columns(names) -> str:
    return ", ".join(f"`{n}`" for n in names)


def stage_table(stages) -> str:
    from distill_ray.stages import describe

    rows = [[_cell(row["stage"]), _cell(row["kind"]), _columns(row["reads"]), _columns(row["writes"])]
            for row in describe(stages)]
    return "\n".join(table(["stage", "kind", "reads", "writes"], rows))


def distill_stage_table() -> str:
    """The distillation pipeline with its optional critic stage (any critic: only its declarations show)."""
    import numpy as np

    from distill_ray.config import PromptConfig, TeacherConfig, VerifyConfig, VoteConfig
    from distill_ray.critic import Critic
    from distill_ray.pipelines.distill import distill_stages

    stages = distill_stages([TeacherConfig()], PromptConfig(), VerifyConfig(), [], 0, VoteConfig(),
                            critic_model=Critic(np.zeros(2), 0.5))
    return stage_table(stages).replace("| critic |", "| critic (with `critic.path`) |")


def puzzle_stage_table() -> str:
    from distill_ray.pipelines.puzzles import puzzle_stages
    from distill_ray.synth.config import Plan, PuzzleJobConfig

    cfg = PuzzleJobConfig(num=1, output="DIR", teacher_prompts=1)
    return stage_table(puzzle_stages(cfg, Plan.of(cfg), frozenset()))


def problem_columns() -> str:
    from distill_ray.tasks.schema import PROBLEM_COLUMNS

    return "\n".join(table(["column", "Arrow type"], [[f"`{c}`", str(t)] for c, t in PROBLEM_COLUMNS.items()]))


def config_reference() -> str:
    from distill_ray.config import reference

    rows = [[f"`{field}`", f"`{default}`", description] for field, default, description in reference()]
    return "\n".join(table(["field", "default", "description"], rows))


SECTIONS: dict[str, Callable[[], str]] = {
    "distill-stages": distill_stage_table,
    "problem-columns": problem_columns,
    "puzzle-stages": puzzle_stage_table,
    "config-reference": config_reference,
}


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated:{name} -->)(.*?)(<!-- /generated:{name} -->)", re.S)


def generated_sections() -> dict[str, str]:
    return {name: f"\n{build()}\n" for name, build in SECTIONS.items()}


def readme_sections(path: Path = README) -> dict[str, str | None]:
    text = path.read_text()
    found = {name: _pattern(name).search(text) for name in SECTIONS}
    return {name: match.group(2) if match else None for name, match in found.items()}


def write_readme(path: Path = README) -> list[str]:
    """Rewrite every generated section of the README; returns the names of those that changed."""
    text, changed = path.read_text(), []
    for name, body in generated_sections().items():
        pattern = _pattern(name)
        match = pattern.search(text)
        if match is None:
            raise ValueError(f"{path} has no <!-- generated:{name} --> section")
        if match.group(2) != body:
            changed.append(name)
            text = text[:match.start(2)] + body + text[match.end(2):]
    path.write_text(text)
    return changed
