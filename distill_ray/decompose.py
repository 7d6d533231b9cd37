"""Decompositional distillation (`distill-ray decompose`): a decomposer student (problem -> sub-questions) and a
solver student (problem + sub-questions -> program), against one CoT/program student, on the same data.

1. **Generate**: the teachers, few-shot with decomposed exemplars (``decomposition.decomposed_exemplars``),
   write sub-questions then the program (``pipelines/decompose.py``); the sandbox verifies, the vote keeps the
   distinct verified programs, and each kept decomposition with ``decompose.min_steps`` sub-questions gives one
   decomposer target and one solver row (``decompose_split``).
2. **Train**, from the same student_init and with the same ``train`` settings, on the same kept decompositions:
   ``single`` on the whole of each (problem -> sub-questions as comments + program), ``decomposer`` on its
   sub-questions, ``solver`` on its code given the problem and the sub-questions. Equal: problems, teacher
   samples, rows (N each) and target text (the two split targets are the single target, cut in two); the
   decomposed arm has two students, so twice the parameters and optimizer steps.
3. **Evaluate** zero-shot on the held-out problems by pass@k: ``single`` samples ``eval.samples`` programs; for
   ``decomposed`` the decomposer samples ``eval.samples`` decompositions and the solver writes one program for
   each, asked the problem with that decomposition's sub-questions (``decomposition.solver_question``).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from distill_ray.config import RunConfig
from distill_ray.decomposition import (DECOMPOSE_PREFIX, SOLVER_PREFIX, decomposed_exemplars, solver_question,
                                       split_program, training_rows)
from distill_ray.evaluate.passk import summarize_passk
from distill_ray.markdown import interval, table
from distill_ray.pipelines.decompose import decompose_stages
from distill_ray.workflow import (build_student_init, connect_ray, eval_sampler, load_task, load_train_source, log,
                                  sample_problems, train_settings)

ROLES = {"decomposed": ("decomposer", "solver"), "single": ("single",)}
SOLVER_SAMPLE = "#"   # solver task ids: <eval task id>#<decomposer sample index>


def check_task(cfg: RunConfig) -> None:
    if cfg.task.source != "puzzles":
        raise ValueError(f"distill-ray decompose needs task.source puzzles (its answers are arithmetic expressions "
                         f"to decompose, e.g. family `chain`), not {cfg.task.source!r}")


def generate(cfg: RunConfig) -> pd.DataFrame:
    """The teachers' decompositions of the train problems, verified, voted and split (``<output>/dataset``)."""
    connect_ray(cfg)
    exemplars, train = load_train_source(cfg)
    shots = decomposed_exemplars(exemplars)
    log(f"decompose: {train.rows()} train problems, {len(shots)} decomposed exemplars")
    recipe = partial(decompose_stages, min_steps=cfg.decompose.min_steps)
    sample_problems(train, cfg.teacher_list(), shots, cfg, Path(cfg.output_dir) / "dataset", vote=True, recipe=recipe)
    return pq.read_table(Path(cfg.output_dir) / "dataset").to_pandas()


def funnel(rows: pd.DataFrame) -> dict:
    rows_kept = rows[rows["keep"] & rows["decomposer_target"].notna()]
    return {"problems": int(rows["task_id"].nunique()), "candidates": len(rows), "verified": int(rows["passed"].sum()),
            "kept": int(rows["keep"].sum()), "decompositions": len(rows_kept),
            "problems_with_one": int(rows_kept["task_id"].nunique())}


def train_students(cfg: RunConfig, rows: pd.DataFrame) -> dict[str, dict]:
    """Each role's student, trained from the one student_init on its rows of the same kept decompositions."""
    import ray.data

    from distill_ray.train import train_student
    from distill_ray.workflow import _tokenizer

    out = Path(cfg.output_dir)
    init_dir = build_student_init(cfg, out)
    tokenizer = _tokenizer(str(init_dir))
    trained = {}
    for role in [r for arm in cfg.decompose.arms for r in ROLES[arm]]:
        data = training_rows(rows, tokenizer, role)
        log(f"decompose: training {role} on {len(data)} rows")
        result = train_student(init_dir, ray.data.from_pandas(data), out / role, train_settings(cfg))
        trained[role] = {"student": result.output_dir, "rows": len(data), "steps": result.steps,
                         "loss_first": (result.loss_history or [float("nan")])[0],
                         "loss_last": (result.loss_history or [float("nan")])[-1],
                         "seconds": result.seconds}
    return trained


def sample(cfg: RunConfig, problems: list[dict], label: str, model: str, prefix: str, samples: int | None = None
           ) -> pd.DataFrame:
    """``model``'s zero-shot answers to ``problems`` after ``prefix``, verified (``<output>/eval/<label>``)."""
    out = Path(cfg.output_dir) / "eval" / label
    sample_problems(problems, [eval_sampler(cfg, label, model, samples)], [], cfg, out, vote=False, num_shots=0,
                    sampling_seed=cfg.seed + 1, recipe=partial(decompose_stages, prefix=prefix))
    return pq.read_table(out, columns=["task_id", "sample_index", "program", "passed"]).to_pandas()


def solver_problems(problems: list[dict], decompositions: pd.DataFrame) -> list[dict]:
    """One solver problem per decomposer sample: its problem, asked with the sample's sub-questions."""
    by_id = {p["task_id"]: p for p in problems}
    out = []
    for row in decompositions.sort_values(["task_id", "sample_index"]).itertuples():
        problem = by_id[row.task_id]
        subquestions, _ = split_program(row.program)
        out.append({**problem, "task_id": f"{row.task_id}{SOLVER_SAMPLE}{row.sample_index}",
                    "question": solver_question(problem["question"], subquestions)})
    return out


def pass_counts(rows: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """(samples, passed) per eval problem; a solver row counts for the problem its decomposition was of."""
    task = rows["task_id"].str.split(SOLVER_SAMPLE, regex=False).str[0]
    return {t: (len(g), int(g.sum())) for t, g in rows["passed"].groupby(task)}


def evaluate_arms(cfg: RunConfig, students: dict[str, dict]) -> dict:
    _, _, problems = load_task(cfg)
    results = {}
    if "single" in students:
        rows = sample(cfg, problems, "single", students["single"]["student"], DECOMPOSE_PREFIX)
        results["single"] = summarize_passk(pass_counts(rows), cfg.eval.k)
    if "decomposer" in students:
        decompositions = sample(cfg, problems, "decomposer", students["decomposer"]["student"], DECOMPOSE_PREFIX)
        steps = decompositions["program"].map(lambda p: len(split_program(p)[0]))
        rows = sample(cfg, solver_problems(problems, decompositions), "solver", students["solver"]["student"],
                      SOLVER_PREFIX, samples=1)
        results["decomposed"] = {**summarize_passk(pass_counts(rows), cfg.eval.k),
                                 "decompositions_with_min_steps": float((steps >= cfg.decompose.min_steps).mean())}
    return results


def run_decompose(cfg: RunConfig) -> dict:
    """Generate, train every arm's students, evaluate; ``decompose.json`` and ``decompose.md`` in the output."""
    check_task(cfg)
    rows = generate(cfg)
    counts = funnel(rows)
    log(f"decompose: {counts}")
    report = {"name": cfg.name, "k": cfg.eval.k, "funnel": counts, "students": {}, "arms": {}}
    if counts["decompositions"]:
        report["students"] = train_students(cfg, rows)
        report["arms"] = evaluate_arms(cfg, report["students"])
    out = Path(cfg.output_dir)
    (out / "decompose.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "decompose.md").write_text(render(report))
    return report


def render(report: dict) -> str:
    f = report["funnel"]
    lines = [f"# Decompositional distillation: {report['name']}", "",
             f"{f['candidates']} teacher samples on {f['problems']} problems, {f['verified']} verified, "
             f"{f['decompositions']} distinct verified decompositions on {f['problems_with_one']} problems: the rows "
             "every student trains on.", ""]
    students = [[role, s["rows"], s["steps"], f"{s['loss_first']:.3f} -> {s['loss_last']:.3f}"]
                for role, s in report["students"].items()]
    lines += table(["student", "rows", "optimizer steps", "loss"], students, right=2) + [""]
    arms = [[arm, *(interval(r[f"pass@{k}"]) for k in report["k"])] for arm, r in report["arms"].items()]
    lines += table(["arm", *(f"pass@{k}" for k in report["k"])], arms, right=len(report["k"]))
    return "\n".join(lines) + "\n"
