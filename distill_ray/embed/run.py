"""``distill-ray disco``: a sentence-embedding student distilled from a teacher, scored against its arms.

1. Data (``data.build``): puzzle texts of the seen families (train), label-balanced eval pairs of new puzzles
   of the seen families and of unseen ones.
2. Teacher stand-in: ``teacher.model``'s frozen mean-pooled last hidden state with a linear head trained on the
   labelled train pairs (``disco.teacher_head_steps``); it embeds every text once.
3. Arms, each from the same cut student (``disco.student_layers``), same seed, same batches per phase:
   ``student`` untouched; ``distilled`` phase 1 (MSE + cosine to the teacher on the unlabelled train texts);
   ``distilled_contrastive`` / ``distilled_contrastive_kd``: phase 1, then phase 2 (in-batch InfoNCE on the
   pairs / with the teacher's in-batch similarities as soft targets); ``contrastive`` / ``contrastive_kd``:
   phase 2 only. Every arm is scored by Spearman's rho on both eval splits. Writes ``disco.json``, ``disco.md``.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

from distill_ray.config import RunConfig
from distill_ray.embed import data as similarity_data
from distill_ray.embed import losses
from distill_ray.embed.train import Embedder, contrastive, distill, pair_cosines, teacher_vectors, train_head
from distill_ray.markdown import table

COMPARISONS = [("distilled", "student"), ("distilled_contrastive", "contrastive"),
               ("distilled_contrastive_kd", "distilled_contrastive"), ("contrastive_kd", "contrastive"),
               ("distilled_contrastive_kd", "contrastive")]
STUDENT_ARM = "distilled_contrastive_kd"   # DisCo's student: distilled, then contrastive KD; saved to <output>/student
ARM_TEXT = {
    "student": "student, untouched",
    "teacher": "teacher stand-in (frozen pooled state + trained linear head)",
    "teacher_raw": "teacher's raw pooled state (no head)",
    "distilled": "student, embedding distillation (phase 1)",
    "distilled_contrastive": "phase 1 + contrastive fine-tuning",
    "distilled_contrastive_kd": "phase 1 + contrastive KD fine-tuning (DisCo)",
    "contrastive": "contrastive fine-tuning only",
    "contrastive_kd": "contrastive KD fine-tuning only",
}


def run_disco(cfg: RunConfig) -> dict:
    from distill_ray.models import resolve_model
    from distill_ray.train import build_student

    d, out = cfg.disco, Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    data = similarity_data.build(train_per_family=d.train_per_family, eval_per_family=d.eval_per_family,
                                 eval_pairs=d.eval_pairs, unseen_families=d.unseen_families, seed=cfg.seed)
    full = resolve_model(cfg.teacher.model)
    raw = cached_teacher_vectors(out / "teacher_vectors.pt", str(full), data.texts + data.eval_texts(), d.max_length)
    head = train_head(raw, data.train, d.teacher_head_steps, d.batch_size, d.teacher_head_lr, d.temperature,
                      cfg.seed)
    teacher = {text: head(vector) for text, vector in raw.items()}
    report = {"setup": {**d.model_dump(), "teacher": cfg.teacher.model, "seed": cfg.seed,
                        "train_texts": len(data.texts), "seen_families": sorted(data.train),
                        "unseen_families": data.unseen_families,
                        "eval_pairs": {split: len(pairs) for split, pairs in data.eval.items()}},
              "arms": {}}
    cosines: dict[str, dict[str, torch.Tensor]] = {}
    labels = {split: [value for *_, value in pairs] for split, pairs in data.eval.items()}

    def score(name: str, vectors: dict[str, torch.Tensor], **extra) -> None:
        cosines[name] = {split: pair_cosines(vectors, pairs) for split, pairs in data.eval.items()}
        report["arms"][name] = {**{split: round(losses.spearman(cosines[name][split], labels[split]), 4)
                                   for split in data.eval}, **extra}
        print(f"disco: {name} {report['arms'][name]}", flush=True)

    if "teacher" in d.arms:
        score("teacher_raw", raw)
        score("teacher", teacher)
    student_dir = build_student(full, out / "student_cut", num_layers=d.student_layers)

    def fresh() -> Embedder:
        torch.manual_seed(cfg.seed)
        model = Embedder(str(student_dir), out_width=len(next(iter(teacher.values()))), seed=cfg.seed)
        model.body.get_input_embeddings().requires_grad_(d.train_embeddings)
        return model

    def embed(model: Embedder) -> dict[str, torch.Tensor]:
        texts = data.eval_texts()
        return dict(zip(texts, model.encode(texts, d.max_length)))

    def phase2(model: Embedder, kd: bool) -> dict:
        started = time.perf_counter()
        history = contrastive(model, data.train, teacher, d.contrastive_steps, d.batch_size, d.lr, d.temperature,
                              d.teacher_temperature, d.contrastive_kd if kd else 0.0, d.max_length, cfg.seed)
        return {"contrastive_seconds": round(time.perf_counter() - started, 1), "contrastive_loss": history[-1]}

    if "student" in d.arms:
        score("student", embed(fresh()))
    if any(arm.startswith("distilled") for arm in d.arms):
        distilled, started = fresh(), time.perf_counter()
        history = distill(distilled, data.texts, teacher, d.distill_steps, d.batch_size, d.lr, d.distill_mse,
                          d.distill_cosine, d.max_length, cfg.seed)
        phase1 = {"distill_seconds": round(time.perf_counter() - started, 1), "distill_loss": history[-1],
                  "distill_loss_first": history[0]}
        if "distilled" in d.arms:
            score("distilled", embed(distilled), **phase1)
        for arm, kd in (("distilled_contrastive", False), ("distilled_contrastive_kd", True)):
            if arm in d.arms:
                model = copy.deepcopy(distilled)
                extra = phase2(model, kd)
                score(arm, embed(model), **phase1, **extra)
                if arm == STUDENT_ARM:   # the method's student, to use: Embedder.load(<output>/student)
                    report["student"] = str(model.save(out / "student"))
    for arm, kd in (("contrastive", False), ("contrastive_kd", True)):
        if arm in d.arms:
            model = fresh()
            extra = phase2(model, kd)
            score(arm, embed(model), **extra)
    report["differences"] = [
        {"arm": a, "minus": b, **{split: bootstrap_difference(cosines[a][split], cosines[b][split], labels[split],
                                                               cfg.seed) for split in data.eval}}
        for a, b in COMPARISONS if a in cosines and b in cosines]
    (out / "disco.json").write_text(json.dumps(report, indent=2))
    (out / "disco.md").write_text(markdown(report))
    return report


def bootstrap_difference(a: torch.Tensor, b: torch.Tensor, labels: list[int], seed: int,
                         rounds: int = 1000) -> dict:
    """rho(a) - rho(b) on the same pairs, with a paired bootstrap 95% interval (pairs resampled, both arms
    scored on each resample)."""
    generator = torch.Generator().manual_seed(seed)
    labels_t = torch.tensor(labels)
    diffs = []
    for _ in range(rounds):
        take = torch.randint(0, len(labels), (len(labels),), generator=generator)
        diffs.append(losses.spearman(a[take], labels_t[take]) - losses.spearman(b[take], labels_t[take]))
    low, high = torch.tensor(diffs, dtype=torch.float64).nan_to_num().quantile(
        torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"difference": round(losses.spearman(a, labels) - losses.spearman(b, labels), 4),
            "ci95": [round(low, 4), round(high, 4)]}


def cached_teacher_vectors(path: Path, model_dir: str, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """``teacher_vectors``, kept at ``path``: a rerun with the same teacher, texts and length reads them back (the
    teacher's forward passes are most of a small run's time on a CPU)."""
    key = {"model": model_dir, "max_length": max_length, "texts": sorted(set(texts))}
    if path.exists():
        saved = torch.load(path)
        if saved["key"] == key:
            return saved["vectors"]
    vectors = teacher_vectors(Embedder(model_dir), texts, max_length)
    torch.save({"key": key, "vectors": vectors}, path)
    return vectors


def markdown(report: dict) -> str:
    rows = [[ARM_TEXT[name], f"{arm['seen']:.3f}", f"{arm['unseen']:.3f}"] for name, arm in report["arms"].items()]
    setup = report["setup"]
    return "\n".join([
        "# distill-ray disco", "",
        f"Spearman's rho between cosine similarity and the label (2 same family, 1 same topic, 0 another topic) on "
        f"{setup['eval_pairs']['seen']} pairs of new puzzles of the {len(setup['seen_families'])} seen families and "
        f"{setup['eval_pairs']['unseen']} of the unseen {', '.join(setup['unseen_families'])}. Teacher "
        f"{setup['teacher']}, student its {setup['student_layers']}-layer cut; phase 1 {setup['distill_steps']} "
        f"steps, phase 2 {setup['contrastive_steps']}, batch {setup['batch_size']}, seed {setup['seed']}.", "",
        *table(["arm", "seen families", "unseen families"], rows, right=2), "",
        "Differences, with paired bootstrap 95% intervals over the eval pairs:", "",
        *table(["arm", "minus", "seen families", "unseen families"],
               [[ARM_TEXT[d["arm"]], ARM_TEXT[d["minus"]],
                 *(f"{d[s]['difference']:+.3f} [{d[s]['ci95'][0]:+.3f}, {d[s]['ci95'][1]:+.3f}]"
                   for s in ("seen", "unseen"))] for d in report["differences"]], right=2), ""])
