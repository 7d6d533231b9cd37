"""Training objectives: ``(model, batch) -> LossOutput``. ``sft`` is the spine's; issue 5's ``kd``,
``soft``, ``swing`` and ``icl`` register here under their names and are picked by ``TrainSettings.objective``.

A batch is what ``data.collate`` makes: left-padded ``input_ids``, ``attention_mask``, ``position_ids``
and unshifted ``labels`` (IGNORE_INDEX on prompt and padding), plus any extra columns an objective needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from distill_ray.train.data import IGNORE_INDEX, max_target_len


@dataclass
class LossOutput:
    loss: torch.Tensor     # scalar to backpropagate (mean over this micro-batch's target tokens)
    tokens: int            # target tokens the loss covered


def target_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that predict each target token, and those tokens: ``(logits [B, T, V], labels [B, T])``.

    With left padding every target ends at the last position, so only the last ``T + 1`` positions need
    the vocabulary projection (``logits_to_keep``); logit ``i`` predicts token ``i + 1``."""
    width = batch["input_ids"].shape[1]
    keep = min(max_target_len(batch) + 1, width)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], use_cache=False, logits_to_keep=keep)
    return out.logits[:, :-1].float(), batch["labels"][:, width - keep + 1:]


def sft_loss(model, batch: dict[str, torch.Tensor]) -> LossOutput:
    """Cross-entropy on the completion tokens only (prompt and padding labels are IGNORE_INDEX)."""
    logits, labels = target_logits(model, batch)
    tokens = int((labels != IGNORE_INDEX).sum())
    if tokens == 0:  # nothing to learn from; keep the graph so every rank still runs backward
        return LossOutput(loss=logits.sum() * 0.0, tokens=0)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    return LossOutput(loss=loss, tokens=tokens)


OBJECTIVES: dict[str, Callable[[object, dict[str, torch.Tensor]], LossOutput]] = {"sft": sft_loss}


def get_objective(name: str):
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; known: {sorted(OBJECTIVES)}") from None
