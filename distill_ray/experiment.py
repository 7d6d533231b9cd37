"""The explicit-knowledge-transfer (EKT) experiment: one student, one data budget, several ways to choose the data.

EKT says a student fine-tuned on teacher samples *filtered by execution* beats the same student trained on the
unfiltered samples (distillation by imitation), and may beat its teacher. The arms:

- ``none``: the student as cut from the teacher's layers, untrained.
- ``unfiltered``: teacher samples as they come (distinct programs per problem).
- ``verified``: only the samples the sandbox verified (EKT).
- ``verified_soft``: verified samples with a multi-teacher soft label over each problem's distinct verified
  programs: a program's weight is its teacher-weighted share of the verified samples (each teacher's own
  shares, averaged with the teachers' weights, as in ``vote.weighted_distribution``), so a problem's weights
  sum to 1 and what several teachers wrote counts more (the ``soft`` objective reads ``label_weight``).
- ``expert_iteration``: the untrained student samples the train problems itself, is verified, and trains on its
  own verified samples (the EKT paper's baseline; the P3 paper's "self-taught" loop).

Every trained arm gets the same number of rows per seed (``experiment.budget``, or the smallest pool among
unfiltered / verified / verified_soft), drawn with that seed; expert iteration trains on at most that many and
the table says how many it had. Each arm is evaluated with the same sampling on the same held-out problems.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from distill_ray.config import RunConfig
from distill_ray.evaluate.report import plot_arms, write_outputs
from distill_ray.markdown import interval, table
from distill_ray.vote import normalize_program, weighted_distribution
from distill_ray.workflow import (build_student_init, connect_ray, default_eval_models, evaluate, generate, load_task,
                                  log, sample_problems, teacher_spec, train)

TEACHER_ARMS = ("unfiltered", "verified", "verified_soft")


def teacher_pools(rows: pd.DataFrame, weights: dict[str, float] | None = None) -> dict[str, pd.DataFrame]:
    """The rows each teacher-data arm may draw from (``weights``: the teachers' vote weights)."""
    written = rows[rows["program"].str.strip() != ""].drop_duplicates(["task_id", "program"])
    verified = rows[rows["keep"]]
    shares = verified_program_shares(rows, weights or {}).reindex(verified.index)
    # A row kept by the vote alone (an unlabelled problem) keeps its vote share.
    soft = verified.assign(label_weight=shares.fillna(verified["label_weight"]))
    return {"unfiltered": written, "verified": verified, "verified_soft": soft}


def verified_program_shares(rows: pd.DataFrame, weights: dict[str, float]) -> pd.Series:
    """Each verified row's soft label: its program's teacher-weighted share of its problem's verified samples."""
    verified = rows[rows["passed"].astype(bool)]
    programs = verified["program"].map(normalize_program)
    shares = pd.Series(0.0, index=verified.index)
    for _, group in verified.groupby("task_id"):
        counts = {t: Counter(programs[g.index]) for t, g in group.groupby("teacher")}
        distribution = weighted_distribution(counts, weights)
        shares[group.index] = programs[group.index].map(distribution).values
    return shares


def draw(pool: pd.DataFrame, budget: int, seed: int) -> pd.DataFrame:
    """``budget`` rows of ``pool`` (all of them when it is smaller), the same for the same seed."""
    take = min(budget, len(pool))
    picked = np.random.default_rng(seed).choice(len(pool), size=take, replace=False) if take else []
    return pool.iloc[sorted(picked)].assign(keep=True)   # train() learns from the rows marked keep


def write_rows(rows: pd.DataFrame, directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), directory / "part-000000.parquet")
    return str(directory)


def expert_pool(cfg: RunConfig, init_dir: str, out: Path) -> pd.DataFrame:
    """The untrained student's own verified samples on the train problems (zero-shot, the teacher's sampling)."""
    exemplars, train_problems, _ = load_task(cfg)
    spec = teacher_spec(cfg.teacher, 0, cfg.prompt.exemplars, cfg.seed, name="student_init", model=init_dir)
    rows, _ = sample_problems(train_problems, [spec], exemplars, cfg, out / "expert_iteration" / "samples",
                              vote=True)
    return rows[rows["keep"]]


def run_experiment(cfg: RunConfig) -> dict:
    """Generate once, then train and evaluate every arm for every seed; write experiment.{json,md,png}."""
    e = cfg.experiment
    connect_ray(cfg)
    out = Path(cfg.output_dir)
    generation = generate(cfg)
    rows = pq.read_table(generation["dataset"]).to_pandas()
    weights = {t.name: t.weight for t in cfg.teacher_list()}
    pools = {arm: pool for arm, pool in teacher_pools(rows, weights).items() if arm in e.arms}
    budget = min([e.budget or len(rows)] + [len(pools[a]) for a in TEACHER_ARMS if a in pools])
    init_dir = None
    results: dict[str, list[dict]] = {arm: [] for arm in e.arms}
    trained_rows: dict[str, int] = {}
    for seed in e.seeds:
        seed_cfg = cfg.model_copy(update={"seed": seed, "output_dir": str(out / f"seed{seed}")}, deep=True)
        for arm in e.arms:
            arm_cfg = arm_config(seed_cfg, arm)
            if arm == "none":
                init_dir = init_dir or build_init(cfg, out)
                results[arm].append(evaluate(arm_cfg, {arm: init_dir})[arm])
                continue
            if arm == "expert_iteration" and arm not in pools:
                init_dir = init_dir or build_init(cfg, out)
                pools[arm] = expert_pool(cfg, init_dir, out)
            data = draw(pools[arm], budget, seed)
            trained_rows[arm] = len(data)
            if data.empty:
                log(f"experiment: arm {arm} has no rows to train on; skipped")
                continue
            dataset = write_rows(data, Path(arm_cfg.output_dir) / "dataset")
            student = train(arm_cfg, dataset)["student"]
            results[arm].append(evaluate(arm_cfg, {arm: student})[arm])
    teacher_models = {label: model for label, model in default_eval_models(cfg).items() if label.startswith("teacher")}
    teachers = evaluate(cfg.model_copy(update={"output_dir": str(out / "teachers")}, deep=True), teacher_models)
    report = {"name": cfg.name, "budget": budget, "seeds": list(e.seeds), "k": list(cfg.eval.k),
              "pools": {arm: len(pool) for arm, pool in pools.items()}, "trained_rows": trained_rows,
              "generation": {k: v for k, v in generation.items() if k != "per_teacher"},
              "arms": {arm: summarize_arm(runs, cfg.eval.k) for arm, runs in results.items() if runs},
              "teachers": teachers, "runs": results}
    write_experiment_report(report, out)
    return report


def arm_config(seed_cfg: RunConfig, arm: str) -> RunConfig:
    update = {"output_dir": str(Path(seed_cfg.output_dir) / arm)}
    if arm == "verified_soft":
        train = seed_cfg.train.model_copy(update={"objectives": {"soft": 1.0}})
        update["train"] = train
    return seed_cfg.model_copy(update=update, deep=True)


def build_init(cfg: RunConfig, out: Path) -> str:
    return str(build_student_init(cfg, out))


def summarize_arm(runs: list[dict], ks: list[int]) -> dict:
    """pass@k over seeds: mean and spread of the per-seed means, and each seed's 95% interval over problems."""
    summary = {"seeds": len(runs)}
    for k in ks:
        means = [r[f"pass@{k}"]["mean"] for r in runs]
        summary[f"pass@{k}"] = {"mean": float(np.mean(means)), "std": float(np.std(means)),
                                "per_seed": means, "ci95_per_seed": [r[f"pass@{k}"]["ci95"] for r in runs]}
    return summary


def write_experiment_report(report: dict, out: Path) -> dict[str, Path]:
    return write_outputs(report, out, "experiment", render_table, plot_arms)


def render_table(report: dict) -> str:
    ks = report["k"]
    rows = [[arm, report["trained_rows"].get(arm, 0), *(seeds_cell(s[f"pass@{k}"]) for k in ks)]
            for arm, s in report["arms"].items()]
    rows += [[arm, 0, *(["nothing to train on: no verified samples"] + ["-"] * (len(ks) - 1))]
             for arm in report["pools"] if arm not in report["arms"] and arm != "none"]
    rows += [[f"{label} (few-shot)", "-", *(interval(t[f"pass@{k}"]) for k in ks)]
             for label, t in report["teachers"].items()]
    lines = [f"# EKT experiment: {report['name']}", "",
             f"Same budget per trained arm: {report['budget']} rows; seeds {report['seeds']}. pass@k is the mean "
             "over seeds of the mean over held-out problems; ± is the spread (std) over seeds; the interval is "
             "seed 0's 95% interval over problems.", ""]
    return "\n".join(lines + table(["arm", "rows trained", *(f"pass@{k}" for k in ks)], rows, right=1 + len(ks))) + "\n"


def seeds_cell(s: dict) -> str:
    low, high = s["ci95_per_seed"][0]
    return f"{s['mean']:.3f} ± {s['std']:.3f} [{low:.2f}, {high:.2f}]"
