"""The on-policy objective over a rollout micro-batch (``rollouts.rollout_batch``): the generalised JSD between
each teacher distribution and the student's at every token the student wrote, weighted by the verifier's
verdict on its completion, plus an optional cross-entropy on the student's own verified completions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill_ray.train import losses
from distill_ray.train.objectives import forward


@dataclass
class StepLoss:
    loss: torch.Tensor     # to backpropagate: the weighted sums / the normaliser
    tokens: int            # completion tokens in this micro-batch
    total: float           # the weighted sums before normalising
    reverse_kl: float      # summed per-token KL(student || teacher), unweighted: what on-policy distillation lowers


def on_policy_loss(model, batch: dict, beta: float, sft_weight: float, normaliser: float) -> StepLoss:
    fwd = forward(model, batch)
    mask = fwd.mask
    scored = fwd.window(batch["topk_mask"]) & mask
    weights = batch["row_weight"].to(fwd.logits.device)[:, None].expand_as(mask)
    total = fwd.logits.sum() * 0.0      # keeps the graph: every rank runs backward, even on an empty batch
    reverse_kl = 0.0
    if scored.any():
        student = fwd.logits[scored]
        ids, logprobs = fwd.window(batch["topk_ids"])[scored], fwd.window(batch["topk_logprobs"])[scored]
        divergence = losses.jsd_topk(student, ids, logprobs, beta)
        total = total + (divergence * weights[scored]).sum()
        with torch.no_grad():
            reverse = divergence if beta == 1.0 else losses.jsd_topk(student, ids, logprobs, 1.0)
            reverse_kl = float(reverse.sum())
    verified = mask & batch["verified"].to(mask.device)[:, None]
    if sft_weight and verified.any():
        total = total + sft_weight * losses.token_nll(fwd.logits, fwd.labels)[verified].sum()
    return StepLoss(loss=total / max(normaliser, 1e-9), tokens=int(mask.sum()), total=float(total.detach()),
                    reverse_kl=reverse_kl)
