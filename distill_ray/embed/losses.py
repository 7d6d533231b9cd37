"""Embedding distillation and contrastive losses over pooled sentence embeddings ([B, D] tensors).

- ``distill_mse`` / ``distill_cosine``: the student's embedding of a text matched to the teacher's (phase 1,
  unlabelled text);
- ``info_nce``: in-batch contrastive loss over (anchor, positive) pairs, every other positive a negative
  (supervised SimCSE); its targets are the diagonal;
- ``contrastive_kd``: the same in-batch similarity distribution, its targets the teacher's own in-batch
  similarities (softmax at ``teacher_temperature``) instead of the diagonal (DisCo's contrastive KD): the student
  learns how much more a negative is like the anchor than another, not only which one is the positive.
- ``spearman``: rank correlation (ties get their average rank), the score of every arm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distill_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error per coordinate between the student's and the (detached) teacher's embeddings."""
    return F.mse_loss(student.float(), teacher.detach().float())


def distill_cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity, averaged over the batch: 0 when each student embedding points where the teacher's
    does (any length), 2 when opposite."""
    return (1.0 - F.cosine_similarity(student.float(), teacher.detach().float(), dim=-1)).mean()


def similarities(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """[B, B]: cos(anchor_i, positive_j) / temperature."""
    return F.normalize(anchors.float(), dim=-1) @ F.normalize(positives.float(), dim=-1).T / temperature


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of each anchor's softmax over the batch's positives against its own positive (the diagonal),
    averaged over the anchors."""
    logits = similarities(anchors, positives, temperature)
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def contrastive_kd(anchors: torch.Tensor, positives: torch.Tensor, teacher_anchors: torch.Tensor,
                   teacher_positives: torch.Tensor, temperature: float, teacher_temperature: float) -> torch.Tensor:
    """KL(teacher || student) between the in-batch similarity distributions of each anchor, averaged over the
    anchors: the teacher's row ``softmax(cos(t_anchor_i, t_positive_j) / teacher_temperature)`` is the soft target
    of the student's ``softmax(cos(anchor_i, positive_j) / temperature)``. 0 (and no gradient) when the student's
    similarities equal the teacher's at equal temperatures; at a low teacher temperature with the teacher's
    positive the most similar, the target is the diagonal and this is ``info_nce`` (minus the targets' entropy,
    0 then)."""
    student_log = F.log_softmax(similarities(anchors, positives, temperature), dim=-1)
    with torch.no_grad():
        target_log = F.log_softmax(similarities(teacher_anchors, teacher_positives, teacher_temperature), dim=-1)
    return F.kl_div(student_log, target_log, log_target=True, reduction="batchmean")


def contrastive(anchors: torch.Tensor, positives: torch.Tensor, teacher_anchors: torch.Tensor | None,
                teacher_positives: torch.Tensor | None, temperature: float, teacher_temperature: float,
                kd_weight: float) -> torch.Tensor:
    """Phase 2's loss: ``(1 - kd_weight) * info_nce + kd_weight * contrastive_kd`` (kd_weight 0: plain
    contrastive fine-tuning, no teacher needed)."""
    loss = anchors.new_zeros((), dtype=torch.float32)
    if kd_weight < 1:
        loss = loss + (1.0 - kd_weight) * info_nce(anchors, positives, temperature)
    if kd_weight > 0:
        loss = loss + kd_weight * contrastive_kd(anchors, positives, teacher_anchors, teacher_positives,
                                                 temperature, teacher_temperature)
    return loss


def ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-d tensor, tied values sharing the mean of their ranks."""
    values = values.double().flatten()
    order = torch.argsort(values, stable=True)
    ordinal = torch.empty_like(values)
    ordinal[order] = torch.arange(1, len(values) + 1, dtype=values.dtype)
    _, group, counts = torch.unique(values, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), dtype=values.dtype).index_add_(0, group, ordinal)
    return (sums / counts)[group]


def spearman(x, y) -> float:
    """Spearman's rank correlation of two equally long sequences (Pearson's r of their tied ranks); nan when
    either is constant."""
    rx, ry = ranks(torch.as_tensor(x)), ranks(torch.as_tensor(y))
    if len(rx) != len(ry):
        raise ValueError(f"spearman needs equally long sequences, got {len(rx)} and {len(ry)}")
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.norm() * ry.norm()).item()
    return float((rx @ ry).item() / denominator) if denominator > 0 else float("nan")
