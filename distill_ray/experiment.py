"""The explicit-knowledge-transfer (EKT) experiment: one student, one data budget, several ways to choose the data.

EKT says a student fine-tuned on teacher samples *filtered by execution* beats the same student trained on the
unfiltered samples (distillation by imitation), and may beat its teacher. The arms:

- ``none``: the student as built (``train.student``, cut where asked), untrained.
- ``unfiltered``: teacher samples as they come (distinct programs per problem).
- ``verified``: only the samples the sandbox verified (EKT).
- ``verified_soft``: verified samples with a multi-teacher soft label over each problem's distinct verified
  programs: a program's weight is its teacher-weighted share of the verified samples (each teacher's own
  shares, averaged with the teachers' weights, as in ``vote.weighted_distribution``), so a problem's weights
  sum to 1 and what several teachers wrote counts more (the ``soft`` objective reads ``label_weight``).
- ``verified_kd``: the verified samples with token-level kd on the teacher's stored top-k (off-policy
  distillation: the teacher's tokens, its distributions; needs a teacher with the student's tokenizer that
  stored ``top_k_logprobs``).
- ``on_policy``: on-policy distillation (``train.mode: on_policy``): the student samples the train problems,
  the teachers score its tokens in their few-shot context, and it minimises the reverse KL on its own samples;
  the verifier's verdicts are ignored (``on_policy.verifier: none``).
- ``on_policy_verified``: the same with the verifier beside the divergence: a rejected completion's divergence
  counts ``on_policy.wrong_weight`` and verified completions also get cross-entropy (``sft_weight`` 1 unless
  set). The on-policy arms train on as many student completions as the teacher-data arms see rows
  (budget x epochs): ``on_policy.steps`` is set from it.
- ``expert_iteration``: P3's self-teaching loop, EKT's baseline, for ``experiment.expert_rounds`` rounds: the
  current student (round 0: the untrained one) samples the train problems zero-shot, its verified samples join
  a pool, and a student is trained on the pool; the last round's student is evaluated (see ``expert_iteration``).

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
from distill_ray.stages.vote import normalize_program, weighted_distribution
from distill_ray.workflow import (build_student_init, connect_ray, default_eval_models, evaluate, generate, load_task,
                                  log, sample_problems, train)

TEACHER_ARMS = ("unfiltered", "verified", "verified_soft")
ON_POLICY_ARMS = ("on_policy", "on_policy_verified")


def teacher_pools(rows: pd.DataFrame, weights: dict[str, float] | None = None) -> dict[str, pd.DataFrame]:
    """The rows each teacher-data arm may draw from (``weights``: the teachers' vote weights)."""
    written = rows[rows["program"].str.strip() != ""].drop_duplicates(["task_id", "program"])
    verified = rows[rows["keep"]]
    shares = verified_program_shares(rows, weights or {}).reindex(verified.index)
    # A row kept by the vote alone (an unlabelled problem) keeps its vote share.
    soft = verified.assign(label_weight=shares.fillna(verified["label_weight"]))
    return {"unfiltered": written, "verified": verified, "verified_soft": soft, "verified_kd": verified}


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


def train_on(arm_cfg: RunConfig, pool: pd.DataFrame, budget: int, init_dir: str | None = None
             ) -> tuple[str | None, int]:
    """(the student trained from ``init_dir`` (None: the arm's own student_init) on ``budget`` rows of
    ``pool``, or None for an empty pool; rows)."""
    data = draw(pool, budget, arm_cfg.seed)
    if data.empty:
        log(f"experiment: {arm_cfg.output_dir} has no rows to train on; skipped")
        return None, 0
    return train(arm_cfg, write_rows(data, Path(arm_cfg.output_dir) / "dataset"), init_dir)["student"], len(data)


def self_samples(cfg: RunConfig, problems: list[dict], model: str, round_dir: Path, seed: int) -> dict:
    """One round of a student sampling ``problems`` zero-shot with the teacher's sampling settings, verified and
    voted (duplicates dropped) into ``round_dir/samples``: its kept rows, and how many it sampled and verified."""
    student = cfg.teacher.model_copy(update=dict(name=round_dir.name, model=model, top_k_logprobs=0))
    # Never resumed: the student at a round's path is retrained by every run (and train.* is not in the
    # parameters a resumed dataset is checked against).
    sample_problems(problems, [student], [], cfg.model_copy(update={"resume": False}), round_dir / "samples",
                    vote=True, num_shots=0, sampling_seed=seed)
    rows = pq.read_table(round_dir / "samples").to_pandas()
    return {"kept": rows[rows["keep"]], "samples": len(rows), "verified": int(rows["passed"].sum())}


def add_to_pool(pool: pd.DataFrame, kept: pd.DataFrame) -> pd.DataFrame:
    """The pool plus the programs it does not have yet (per task, compared whitespace-insensitively)."""
    both = pd.concat([pool, kept], ignore_index=True)
    return both[~both.assign(p=both["program"].map(normalize_program)).duplicated(["task_id", "p"])]


def expert_iteration(arm_cfg: RunConfig, problems: list[dict], first: dict, budget: int,
                     rounds: int, init_dir: str | None = None) -> tuple[str | None, list[dict]]:
    """P3's self-teaching loop: round r's student samples the train problems (``first``: round 0's samples, by
    the untrained student), its new verified programs join the pool, and a student is trained on the pool
    (at most ``budget`` rows). Returns the last trained student (None: none was) and each round's counts.

    Each round trains a *fresh* student from student_init rather than training on from the last round's: the
    pool keeps every round's programs, so nothing learnt is lost, each round's student gets exactly the training
    of the teacher-data arms (same start, budget and steps) so that the arms differ in their data only, and the
    first rounds' programs are not fitted once more per round (STaR restarts from the base model for the same
    reason). A round that verifies nothing ends the loop; one that adds no new program keeps its student (the
    same pool would train the same student) and the next round samples it again with another seed."""
    out = Path(arm_cfg.output_dir)
    pool, student, history = first["kept"].iloc[:0], None, []
    for r in range(rounds):
        found = first if r == 0 else self_samples(arm_cfg, problems, student, out / f"round{r}", arm_cfg.seed + r)
        grown = add_to_pool(pool, found["kept"])
        stats = {"round": r, "samples": found["samples"], "verified": found["verified"], "pool": len(grown),
                 "trained_rows": 0}
        history.append(stats)
        log(f"expert iteration, seed {arm_cfg.seed}, round {r}: {found['verified']} of {found['samples']} samples "
            f"verified, pool {len(grown)}")
        if not found["verified"]:
            stats["note"] = "verified nothing: stopped"
            break
        if len(grown) == len(pool):
            stats["note"] = "nothing new: student kept"
            continue
        pool = grown
        student, stats["trained_rows"] = train_on(arm_cfg.model_copy(update={"output_dir": str(out / f"round{r}")}),
                                                  pool, budget, init_dir=init_dir)
    return student, history


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
    init_dir = build_init(cfg, out)
    problems, first = [], {}
    if "expert_iteration" in e.arms:   # round 0 samples the untrained student: the same for every seed
        _, problems, _ = load_task(cfg)
        if not isinstance(problems, list):   # a table source: expert iteration samples them from a list
            problems = problems.problems()
        first = self_samples(cfg, problems, init_dir, out / "expert_iteration" / "round0", cfg.seed)
    results: dict[str, list[dict]] = {arm: [] for arm in e.arms}
    trained_rows: dict[str, int] = {}
    expert_rounds: dict[int, list[dict]] = {}
    on_policy_runs: dict[str, dict[int, dict]] = {}
    for seed in e.seeds:
        seed_cfg = cfg.model_copy(update={"seed": seed, "output_dir": str(out / f"seed{seed}")}, deep=True)
        seed_init = seed_student_init(cfg, seed_cfg, init_dir)
        for arm in e.arms:
            arm_cfg = arm_config(seed_cfg, arm)
            if arm == "none":   # untrained: every seed would sample the same model on the same problems
                results[arm].append(results[arm][0] if results[arm] else evaluate_arm(cfg, arm_cfg, init_dir))
                continue
            if arm in ON_POLICY_ARMS:
                arm_cfg = on_policy_config(arm_cfg, arm, budget)
                summary = train(arm_cfg, init_dir=seed_init)
                student, trained_rows[arm] = summary["student"], summary["samples"]   # completions trained on
                on_policy_runs.setdefault(arm, {})[seed] = on_policy_summary(summary["history"])
            elif arm == "expert_iteration":
                student, expert_rounds[seed] = expert_iteration(arm_cfg, problems, first, budget, e.expert_rounds,
                                                                seed_init)
                # the last student's rows: the pool only grows, so no earlier round trained on more
                trained_rows[arm] = max(r["trained_rows"] for r in expert_rounds[seed])
            else:
                student, trained_rows[arm] = train_on(arm_cfg, pools[arm], budget, seed_init)
            if student:
                results[arm].append(evaluate_arm(cfg, arm_cfg, student))
    teacher_models = {label: model for label, model in default_eval_models(cfg).items() if label.startswith("teacher")}
    teachers = evaluate(cfg.model_copy(update={"output_dir": str(out / "teachers")}, deep=True), teacher_models)
    report = {"name": cfg.name, "budget": budget, "seeds": list(e.seeds), "k": list(cfg.eval.k),
              "pools": {arm: len(pool) for arm, pool in pools.items()}, "trained_rows": trained_rows,
              "expert_rounds": expert_rounds, "on_policy": on_policy_runs,
              "generation": {k: v for k, v in generation.items() if k != "per_teacher"},
              "arms": {arm: summarize_arm(runs, cfg.eval.k) for arm, runs in results.items() if runs},
              "teachers": teachers, "runs": results}
    write_experiment_report(report, out)
    return report


def evaluate_arm(cfg: RunConfig, arm_cfg: RunConfig, student: str) -> dict:
    """pass@k of an arm's student on the held-out problems and with the sampling of ``cfg.seed``, as the teachers
    are evaluated (another seed's problems would differ, and could include ``cfg.seed``'s train problems)."""
    arm = Path(arm_cfg.output_dir).name
    return evaluate(arm_cfg.model_copy(update={"seed": cfg.seed}), {arm: student})[arm]


def arm_config(seed_cfg: RunConfig, arm: str) -> RunConfig:
    update = {"output_dir": str(Path(seed_cfg.output_dir) / arm)}
    if arm in ("verified_soft", "verified_kd"):
        objective = "soft" if arm == "verified_soft" else "kd"
        update["train"] = seed_cfg.train.model_copy(update={"objectives": {objective: 1.0}})
    return seed_cfg.model_copy(update=update, deep=True)


def on_policy_config(arm_cfg: RunConfig, arm: str, budget: int) -> RunConfig:
    """An on-policy arm's run: as many student completions as the teacher-data arms train on rows (budget x
    epochs); ``on_policy_verified`` weighs rejected completions down and adds cross-entropy on verified ones."""
    op, train = arm_cfg.on_policy, arm_cfg.train
    per_step = train.workers * op.prompts_per_step * op.samples
    update = {"steps": max(1, -(-budget * train.epochs // per_step))}
    if arm == "on_policy":
        update.update(verifier="none", sft_weight=0.0)
    else:
        update.update(verifier="weight", sft_weight=op.sft_weight or 1.0)
    return arm_cfg.model_copy(update={"train": train.model_copy(update={"mode": "on_policy"}),
                                      "on_policy": op.model_copy(update=update)}, deep=True)


def on_policy_summary(history: list[dict]) -> dict:
    """An on-policy run in a few numbers: the divergence and the verified share of the student's samples at the
    first and the last step, the mean staleness, and the mean seconds per step of each part."""
    from distill_ray.onpolicy.loop import STEP_PARTS

    first, last = history[0], history[-1]
    return {"steps": len(history), "reverse_kl": [first["reverse_kl"], last["reverse_kl"]],
            "verified": [first["verified"], last["verified"]],
            "staleness": sum(h["staleness"] for h in history) / len(history),
            **{part: sum(h.get(part, 0.0) for h in history) / len(history) for part in STEP_PARTS}}


def build_init(cfg: RunConfig, out: Path) -> str:
    return str(build_student_init(cfg, out))


def seed_student_init(cfg: RunConfig, seed_cfg: RunConfig, init_dir: str) -> str:
    """The student every arm of a seed starts from: the run's own (one copy on disk, not one per arm), unless a
    cut student is healed, which is seeded: then the seed's own."""
    if cfg.train.student_layers and cfg.train.heal_steps:
        return build_init(seed_cfg, Path(seed_cfg.output_dir))
    return init_dir


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
    rows = [[arm, trained_on(arm, report["trained_rows"].get(arm, 0)), *(seeds_cell(s[f"pass@{k}"]) for k in ks)]
            for arm, s in report["arms"].items()]
    rows += [[arm, 0, *(["nothing to train on: no verified samples"] + ["-"] * (len(ks) - 1))]
             for arm in report["trained_rows"] if arm not in report["arms"]]
    rows += [[f"{label} (few-shot)", "-", *(interval(t[f"pass@{k}"]) for k in ks)]
             for label, t in report["teachers"].items()]
    lines = [f"# EKT experiment: {report['name']}", "",
             f"Same budget per trained arm: {report['budget']} rows; seeds {report['seeds']}. pass@k is the mean "
             "over seeds of the mean over held-out problems; ± is the spread (std) over seeds; the interval is "
             "seed 0's 95% interval over problems.", ""]
    lines += table(["arm", "trained on", *(f"pass@{k}" for k in ks)], rows, right=1 + len(ks))
    return "\n".join(lines + expert_rounds_table(report.get("expert_rounds", {}))
                     + on_policy_table(report.get("on_policy", {}))) + "\n"


def trained_on(arm: str, count: int) -> str:
    return f"{count} student completions" if arm in ON_POLICY_ARMS else f"{count} rows"


def on_policy_table(runs: dict) -> list[str]:
    """Each on-policy run: how the divergence and the verified share of its own samples moved, its staleness,
    and where a step's time went."""
    if not runs:
        return []
    from distill_ray.onpolicy.loop import STEP_PARTS

    rows = [[arm, seed, r["steps"], f"{r['reverse_kl'][0]:.3f} -> {r['reverse_kl'][1]:.3f}",
             f"{r['verified'][0]:.2f} -> {r['verified'][1]:.2f}", f"{r['staleness']:.2f}",
             " / ".join(f"{r[p]:.1f}" for p in STEP_PARTS)]
            for arm, seeds in runs.items() for seed, r in seeds.items()]
    return ["", "## On-policy runs", "",
            "Reverse KL(student || teacher) per token and the verified share of the student's own samples, first "
            "step -> last; seconds per step (mean): sample / score / verify / train / sync / wait / whole step "
            "(sample, score and verify run beside training, so the whole step is less than their sum).", ""] + \
        table(["arm", "seed", "steps", "reverse KL", "verified", "staleness", "seconds per step"], rows, right=5)


def expert_rounds_table(expert_rounds: dict) -> list[str]:
    """Expert iteration round by round: what each round's student sampled and verified, and the pool after it."""
    if not expert_rounds:
        return []
    rows = [[seed, r["round"], r["samples"], r["verified"], r["pool"], r.get("note", r["trained_rows"])]
            for seed, history in expert_rounds.items() for r in history]
    return ["", "## Expert iteration, round by round", "",
            "Round 0's student is the untrained one; round r's is the one trained after round r - 1 (a round that "
            "adds no new program trains no new student).", ""] + \
        table(["seed", "round", "samples", "verified", "pool", "rows trained"], rows, right=4)


def seeds_cell(s: dict) -> str:
    low, high = s["ci95_per_seed"][0]
    return f"{s['mean']:.3f} ± {s['std']:.3f} [{low:.2f}, {high:.2f}]"
