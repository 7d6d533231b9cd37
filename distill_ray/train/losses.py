"""The distillation losses as small pure functions over tensors (no models, no batches).

Shapes: ``N`` target tokens (flattened), ``V`` vocabulary, ``K`` stored top-k entries, ``B`` rows.
Every function returns a per-token (or per-row) tensor or a scalar mean, so the objectives in
``objectives.py`` can mix tokens from several sources before averaging.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from distill_ray.train.data import IGNORE_INDEX


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of each label, 0 where the label is IGNORE_INDEX. logits [B,T,V], labels [B,T]."""
    flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="none")
    return flat.view(labels.shape)


def soft_label_sum(nll: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sequence-level soft labels: sum_i w_i * NLL(row i), summed over the rows' target tokens.

    nll [B,T] (0 off target); weights [B] in [0,1] (a candidate's share of the vote; 1.0 on agreement rows).
    The caller divides by the *unweighted* target token count, which keeps the weights absolute: the
    candidates of one disagreement prompt, whose shares sum to 1, together count as much as one agreement row."""
    return (nll * weights.to(nll.device)[:, None]).sum()


def kl_full(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: torch.Tensor | float) -> torch.Tensor:
    """Per-token T^2 * KL(teacher_T || student_T) over the whole vocabulary. logits [N,V]; temperature a
    float or [N] (one per token, for swing). The T^2 factor keeps gradient sizes comparable across T."""
    t = _per_token(temperature, student_logits)
    teacher_logp = F.log_softmax(teacher_logits.float() / t, dim=-1)
    student_logp = F.log_softmax(student_logits.float() / t, dim=-1)
    kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(dim=-1)
    return kl * t.squeeze(-1) ** 2


def kl_topk(student_logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor,
            temperature: torch.Tensor | float) -> torch.Tensor:
    """Per-token T^2 * KL(teacher_T || student_T) over the teacher's k stored ids, teacher *and* student
    renormalised over those ids. topk_ids/logprobs [N,K] (missing entries: logprob -inf); student_logits [N,V].

    Why k-way: the stored logprobs are the teacher's at T=1; at another T its normaliser needs the whole
    vocabulary, so the tempered teacher is only known up to a constant on the k ids, and renormalising
    there is exact. The student is renormalised over the same ids, so the loss is 0 when it equals the
    teacher at every T, and it only shapes the student's distribution *among* those ids: it never pushes a
    token outside the top-k (the label of an sft term, say) towards probability 0."""
    # float64 on the [N,K] slice (cheap): T^2 amplifies float32 rounding to ~1e-5 at T=8.
    t = _per_token(temperature, student_logits).double()
    present = torch.isfinite(topk_logprobs)
    teacher_logp = F.log_softmax(topk_logprobs.double() / t, dim=-1)
    student_at_ids = student_logits.gather(-1, topk_ids).double() / t
    student_logp = F.log_softmax(student_at_ids.masked_fill(~present, float("-inf")), dim=-1)
    p = teacher_logp.exp()
    terms = torch.where(present, p * (teacher_logp - student_logp), torch.zeros_like(p))  # 0 * -inf is 0
    return (terms.sum(dim=-1) * t.squeeze(-1) ** 2).float()


def jsd_topk(student_logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor,
             beta: float) -> torch.Tensor:
    """Per-token generalised Jensen-Shannon divergence of GKD (Agarwal et al., 2024), k-way over the teacher's
    ids: teacher P and student Q both renormalised over ``topk_ids`` (like ``kl_topk``), M = beta P + (1-beta) Q,
    JSD_beta = beta KL(P || M) + (1-beta) KL(Q || M). As in TRL's ``GKDTrainer``, the ends are the two KLs:
    beta = 0 is forward KL(P || Q) and beta = 1 is reverse KL(Q || P), the mode-seeking divergence of on-policy
    distillation. topk_ids/logprobs [N,K] (missing entries: logprob -inf); student_logits [N,V]."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    present = torch.isfinite(topk_logprobs)
    teacher = F.log_softmax(topk_logprobs.double(), dim=-1)
    student = F.log_softmax(student_logits.gather(-1, topk_ids).double().masked_fill(~present, float("-inf")), dim=-1)
    if beta == 0.0:
        return _kl(teacher, student, present).float()
    if beta == 1.0:
        return _kl(student, teacher, present).float()
    mixture = torch.logsumexp(torch.stack([teacher + math.log(beta), student + math.log(1 - beta)]), dim=0)
    return (beta * _kl(teacher, mixture, present) + (1 - beta) * _kl(student, mixture, present)).float()


def _kl(p_log: torch.Tensor, q_log: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) per row over the present entries (absent ones hold probability 0 in both)."""
    terms = torch.where(present, p_log.exp() * (p_log - q_log), torch.zeros_like(p_log))
    return terms.sum(dim=-1)


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Relational KD, distance-wise (Park et al., 2019): the pairwise distances between the B examples' embeddings,
    each set divided by its mean, matched with a Huber loss. student [B, Ds], teacher [B, Dt]: the widths may
    differ (only distances are compared), and it is 0 when the student's embeddings are the teacher's up to a
    rotation, a translation and a scale. Mean over the B(B-1) ordered pairs; 0 with fewer than 2 examples."""
    if len(student) < 2:
        return student.sum() * 0.0
    off_diagonal = ~torch.eye(len(student), dtype=torch.bool, device=student.device)
    s, t = (_normalised_distances(x.float(), off_diagonal) for x in (student, teacher.detach()))
    return F.smooth_l1_loss(s[off_diagonal], t[off_diagonal])


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Relational KD, angle-wise: for every triplet (i, j, k) the cosine of the angle at j between the embeddings
    of i and k, matched with a Huber loss (mean over all triplets; degenerate ones with i or k equal to j count
    0 on both sides). Invariant to rotation, translation and scale; 0 with fewer than 3 examples."""
    if len(student) < 3:
        return student.sum() * 0.0
    return F.smooth_l1_loss(_angles(student.float()), _angles(teacher.detach().float()))


def _normalised_distances(x: torch.Tensor, off_diagonal: torch.Tensor) -> torch.Tensor:
    distances = torch.cdist(x, x)
    return distances / distances[off_diagonal].mean().clamp(min=1e-12)


def _angles(x: torch.Tensor) -> torch.Tensor:
    """[B, B, B]: cos of the angle at j between (x_i - x_j) and (x_k - x_j)."""
    edges = F.normalize(x[None, :, :] - x[:, None, :], p=2, dim=-1)   # [j, i]: unit vector from x_j to x_i
    return torch.bmm(edges, edges.transpose(1, 2))


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KNIFE's alignment: per token, the mean squared difference between the student's hidden state and the
    teacher's of the same token. student, teacher [N, D] (same width); returns [N]; no gradient into the teacher."""
    return (student.float() - teacher.detach().float()).pow(2).mean(dim=-1)


def swing_temperatures(privacy: torch.Tensor, base: float, maximum: float) -> torch.Tensor:
    """Per-token temperature rising linearly from ``base`` (score 0) to ``maximum`` (score 1) with the
    likelihood that the token carries private information: private tokens get flat, uninformative targets."""
    return base + (maximum - base) * privacy.clamp(0.0, 1.0)


def add_noise(logits: torch.Tensor, scale: torch.Tensor | float, generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian noise on teacher logits [N,V], drawn from ``generator`` so a seed reproduces it; ``scale`` is
    the std, a float or [N] (one per token). -inf entries (missing top-k) stay -inf."""
    if not isinstance(scale, torch.Tensor) and scale <= 0:
        return logits
    noise = torch.randn(logits.shape, generator=generator, dtype=torch.float32).to(logits.device)
    scale = scale.to(logits.device).reshape(-1, 1) if isinstance(scale, torch.Tensor) else scale
    return logits.float() + scale * noise


def _per_token(temperature: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Temperature as an [N,1] column that broadcasts over the vocabulary."""
    if isinstance(temperature, torch.Tensor):
        return temperature.to(like.device, torch.float32).reshape(-1, 1)
    return torch.full((like.shape[0], 1), float(temperature), device=like.device)
