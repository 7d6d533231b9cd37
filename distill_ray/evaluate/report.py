"""The run report: report.json (everything measured), report.md (tables) and report.png (plots)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402

from distill_ray.markdown import interval, table  # noqa: E402

FUNNEL = ("problems", "candidates", "verified", "kept", "agreement_problems", "disagreement_problems",
          "trained_rows")


def write_outputs(report: dict, out_dir: Path, stem: str, render, draw) -> dict[str, Path]:
    """``<stem>.json`` (everything measured), ``<stem>.md`` (``render(report)``) and ``<stem>.png``
    (``draw(report, path)``): the three files every report of the project writes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{stem}.{ext}" for ext in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(report, indent=2, default=str))
    paths["md"].write_text(render(report))
    draw(report, paths["png"])
    return paths


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
    return write_outputs(report, out_dir, "report", render_markdown, plot)


def write_model_card(student_dir: Path, report: dict) -> Path:
    """``model_card.json`` + ``model_card.md`` in the exported student: where its data came from, how it was
    trained, and how it scored, so the checkpoint explains itself wherever it is copied."""
    cfg = report["config"]
    card = {
        "model": str(student_dir), "base": (report["training"] or {}).get("base", ""),
        "objective": describe_objectives((report["training"] or {}).get("objectives") or {"sft": 1.0}),
        "data": {"dataset": report["outputs"]["dataset"], "task": cfg["task"], "funnel": report["funnel"]},
        "training": {k: v for k, v in (report["training"] or {}).items() if k != "loss_history"},
        "evaluation": report["evaluation"].get("student"), "teacher_evaluation": report["evaluation"].get("teacher"),
    }
    (student_dir / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
    lines = [f"# Student of {cfg['teacher']['model']} (distill-ray run {report['name']!r})", "",
             f"- base: {card['base']}", f"- objective: {card['objective']}",
             f"- data: {report['funnel']['trained_rows']} verified rows from `{card['data']['dataset']}` "
             f"({cfg['task']['source']} task)"]
    for label in ("student", "teacher"):
        scores = report["evaluation"].get(label)
        if scores:
            lines.append(f"- {label} on {scores['problems']} held-out problems: "
                         + ", ".join(f"pass@{k} {scores[f'pass@{k}']['mean']:.3f}" for k in report["eval_k"]))
    (student_dir / "model_card.md").write_text("\n".join(lines) + "\n")
    return student_dir / "model_card.json"


OBJECTIVES = {"sft": "cross-entropy on verified completions (completion tokens only)",
              "soft": "likelihood of each candidate weighted by the teachers' vote (soft labels)",
              "kd": "token-level KL to the teacher's distribution (temperature T, scaled by T^2)",
              "swing": "KL to the teacher with per-token privacy temperature and noise",
              "icl": "completions after in-context demonstrations",
              "mlm": "span infilling: a masked span of each completion written after the sequence",
              "rkd_distance": "relational KD: the batch's pairwise embedding distances matched to the teacher's",
              "rkd_angle": "relational KD: the angles of the batch's embedding triplets matched to the teacher's",
              "knife_teacher": "KNIFE's teacher: the target of rationale + input, read through the input tokens only",
              "knife": "KNIFE: the input and target tokens' hidden states matched to a rationale-reading teacher's",
              "on_policy": "on-policy distillation: the GKD divergence to the teachers on the student's own samples, "
                           "weighted by the verifier"}


def describe_objectives(objectives: dict) -> str:
    return "; ".join(f"{weight:g} x {name}: {OBJECTIVES.get(name, name)}" for name, weight in objectives.items())


def render_markdown(report: dict) -> str:
    lines = [f"# distill-ray report: {report['name']}", ""]
    funnel = report.get("funnel", {})
    if funnel:
        lines += ["## Data funnel", ""] + table(["stage", "count"], [[k, funnel[k]] for k in FUNNEL if k in funnel],
                                                 right=1) + [""]
    teacher = report.get("generation", {})
    if teacher:
        lines += ["## Teacher sampling (train prompts)", "",
                  f"- verified {teacher['verified']} of {teacher['candidates']} candidates "
                  f"({teacher['verified_rate']:.1%}); pass@{teacher['k']} over train prompts "
                  f"{teacher['train_pass_at_k']:.1%}",
                  f"- {teacher['completion_tokens']} tokens in {teacher['seconds']:.1f} s "
                  f"({teacher['tokens_per_s']:.1f} tokens/s end to end)"]
        if "disagreement_problems" in teacher:
            lines.append(f"- votes: {teacher['agreement_problems']} prompts in the agreement set (hard labels), "
                         f"{teacher['disagreement_problems']} in the disagreement set (soft labels); kept rows "
                         f"{teacher['kept_hard']} hard, {teacher['kept_soft']} soft")
        lines.append("")
        lines += per_teacher_table(teacher.get("per_teacher", {}))
    training = report.get("training")
    if training:
        lines += ["## Training", "",
                  f"- {training['steps']} optimizer steps, {training['samples']} samples seen "
                  f"({training['tokens']} target tokens) in {training['seconds']:.1f} s",
                  f"- loss {training['loss_first']:.3f} -> {training['loss_last']:.3f}", ""]
    evaluation = report.get("evaluation", {})
    if evaluation:
        ks = report["eval_k"]
        critic = all("critic@1" in s for s in evaluation.values())
        rows = [[model, s["problems"], s["samples"], s["correct"], *(interval(s[f"pass@{k}"]) for k in ks),
                 *([f"{s['critic@1']['mean']:.3f}"] if critic else [])] for model, s in evaluation.items()]
        lines += ["## Evaluation (held-out problems, by execution)", ""]
        lines += table(["model", "problems", "samples", "correct", *(f"pass@{k} (95% CI)" for k in ks),
                        *(["critic's pick passes"] if critic else [])], rows,
                       right=3 + len(ks) + critic) + [""]
    lines += ["## Outputs", ""] + [f"- {k}: `{v}`" for k, v in report.get("outputs", {}).items()] + [""]
    return "\n".join(lines)


def per_teacher_table(per_teacher: dict) -> list[str]:
    """One row per teacher: what it wrote and how fast (tokens per second of its generation time)."""
    if not per_teacher:
        return []
    rows = [[name, t["candidates"], t["verified"], t["completion_tokens"], f"{t['tokens_per_s']:.1f}"]
            for name, t in per_teacher.items()]
    return table(["teacher", "candidates", "verified", "tokens", "tokens/s while generating"], rows, right=4) + [""]


def plot(report: dict, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for model, s in report.get("evaluation", {}).items():
        ks = report["eval_k"]
        left.plot(ks, [s[f"pass@{k}"]["mean"] for k in ks], marker="o", label=model)
    left.set(title="pass@k on held-out problems", xlabel="k", ylabel="pass@k", ylim=(0, 1))
    if report.get("evaluation"):
        left.legend()
    funnel = report.get("funnel", {})
    keys = [k for k in FUNNEL if k in funnel]
    right.barh(keys[::-1], [funnel[k] for k in keys][::-1], color="tab:blue")
    right.set(title="data funnel", xlabel="rows")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_arms(report: dict, path: Path) -> None:
    """The experiment's arms side by side: pass@k per arm (mean over seeds, spread as error bars), with each
    teacher as a reference line."""
    arms = list(report["arms"])
    ks = report["k"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(arms), 3.6))
    width = 0.8 / len(ks)
    for j, k in enumerate(ks):
        means = [report["arms"][a][f"pass@{k}"]["mean"] for a in arms]
        spread = [report["arms"][a][f"pass@{k}"]["std"] for a in arms]
        ax.bar([i + j * width for i in range(len(arms))], means, width, yerr=spread, capsize=3, label=f"pass@{k}")
        for t, teacher in enumerate(report["teachers"].values()):
            ax.axhline(teacher[f"pass@{k}"]["mean"], color=f"C{j}", linestyle=(":", "--", "-.")[t % 3], linewidth=1)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(arms))], arms, rotation=15)
    ax.set_ylabel("pass@k on held-out problems")
    styles = ", ".join(f"{('dotted', 'dashed', 'dash-dot')[t % 3]}: {label}" for t, label in enumerate(report["teachers"]))
    ax.set_title(f"EKT arms, {report['budget']} training rows each ({styles})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bench(report: dict, path: Path) -> None:
    """Each stage's throughput as a ratio to its baseline (1.0 = as fast as the simplest way)."""
    rows = [(f"{stage}: {r['case']}" + (f" [{r['workers']}]" if r["workers"] else ""), r["ratio"])
            for stage, result in report["stages"].items() for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ax.barh([label for label, _ in rows][::-1], [ratio for _, ratio in rows][::-1], color="C0")
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("throughput / baseline measured in the same run (log scale)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
