"""A training micro-batch from one Ray Data batch of rows, with the extra tensors the objectives ask for.

Every extra is laid out like ``labels`` ([B, W], left-padded, target tokens at the end of each row), so the
objectives slice them with the same window as the logits:

- ``label_weight`` [B]: column ``label_weight`` (the vote share of the row's answer), 1.0 where absent.
- ``topk_ids`` / ``topk_logprobs`` [B, W, K], ``topk_mask`` [B, W], ``topk_row`` [B]: column ``teacher_topk``
  (per completion token a list of ``[token_id, logprob]`` pairs); completion token ``j`` is target token
  ``j``; ``topk_row`` marks the rows that have a list (their teacher context is the stored one).
- ``privacy`` [B, W]: each target token's privacy score (``privacy.token_scores``), for ``swing``.
- ``icl``: a second batch whose prompts carry ``icl_shots`` demonstrations (rows of this batch from *other
  tasks*, column ``task_id``, else other prompts; drawn with ``rng``), labels on the final target only.
- ``mlm``: a second batch of span-infilling inputs (``infill.py``: a span of each target moved behind the
  sequence, its place marked), labels on the span (+ EOS) only; spans drawn from ``rng`` after ``icl``'s draws.
- ``knife``: the KNIFE teacher's rows (``knife.teacher_batch``): column ``rationale_text`` before each row's own
  prompt + target, labels on the target, and ``rationale`` [B, W'] marking the rationale's positions.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import torch

from distill_ray.train.data import IGNORE_INDEX, PROMPT_COLUMN, TARGET_COLUMN, collate, tokenize_rows
from distill_ray.train.infill import infill_rows
from distill_ray.train.knife import RATIONALE_COLUMN, teacher_batch

WEIGHT_COLUMN = "label_weight"
TOPK_COLUMN = "teacher_topk"
TASK_COLUMN = "task_id"


def make_batch(rows: dict, tokenizer, max_length: int, pad_id: int, needs: set[str],
               rng: random.Random | None = None, icl_shots: int = 0,
               privacy_patterns: Sequence[str] = (), privacy_scorer: str = "regex",
               privacy_terms: Sequence[str] = (), mlm_span: float = 0.3) -> dict:
    """``needs``: which extras to build ("label_weight", "topk", "privacy", "icl", "mlm", "knife"). ``privacy_scorer``
    "likelihood" builds no ``privacy``: swing scores it from the teacher's log-probabilities."""
    prompts, targets = list(rows[PROMPT_COLUMN]), list(rows[TARGET_COLUMN])
    examples = tokenize_rows(tokenizer, prompts, targets, max_length)
    batch = collate(examples, pad_id)
    if "label_weight" in needs:
        batch["label_weight"] = label_weights(rows.get(WEIGHT_COLUMN), len(prompts))
    if "topk" in needs and rows.get(TOPK_COLUMN) is not None:
        batch.update(topk_tensors(rows[TOPK_COLUMN], batch["labels"]))
    if "privacy" in needs and privacy_scorer != "likelihood":
        batch["privacy"] = privacy_tensor(tokenizer, batch["labels"], privacy_patterns, privacy_scorer, privacy_terms)
    rng = rng or random.Random(0)
    if "icl" in needs:
        tasks = list(rows[TASK_COLUMN]) if rows.get(TASK_COLUMN) is not None else prompts
        icl_prompts = with_demonstrations(prompts, targets, icl_shots, rng, tokenizer.eos_token or "", tasks)
        batch["icl"] = collate(tokenize_rows(tokenizer, icl_prompts, targets, max_length), pad_id)
    if "mlm" in needs:
        batch["mlm"] = collate(infill_rows(tokenizer, prompts, targets, max_length, rng, mlm_span), pad_id)
    if "knife" in needs:
        if rows.get(RATIONALE_COLUMN) is None:
            raise ValueError(f"knife and knife_teacher read each row's rationale: the rows have no "
                             f"{RATIONALE_COLUMN!r} column")
        batch["knife"] = teacher_batch(tokenizer, rows[RATIONALE_COLUMN], examples, max_length, pad_id)
    return batch


def label_weights(column, rows: int) -> torch.Tensor:
    """Row weights in [0, 1]; a missing column or a null/NaN entry weighs 1.0."""
    if column is None:
        return torch.ones(rows)
    values = [1.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in column]
    weights = torch.tensor(values, dtype=torch.float32)
    if ((weights < 0) | (weights > 1)).any():
        raise ValueError(f"label_weight must be in [0, 1], got {values}")
    return weights


def topk_tensors(column, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Stored top-k lists placed on the target positions of ``labels``; rows without a list (None) or
    tokens past its end keep ``topk_mask`` False. Target token j of row i sits at W - n_i + j (left padding)."""
    width = labels.shape[1]
    entries = [_pairs(row) for row in column]
    k = max((len(tok) for row in entries for tok in row), default=1)
    ids = torch.zeros((len(entries), width, k), dtype=torch.long)
    logprobs = torch.full((len(entries), width, k), float("-inf"))
    mask = torch.zeros((len(entries), width), dtype=torch.bool)
    has_row = torch.tensor([any(row) for row in entries], dtype=torch.bool)
    for i, row in enumerate(entries):
        n = int((labels[i] != IGNORE_INDEX).sum())
        for j, pairs in enumerate(row[:n]):
            if pairs:
                ids[i, width - n + j, :len(pairs)] = torch.tensor([int(p[0]) for p in pairs])
                logprobs[i, width - n + j, :len(pairs)] = torch.tensor([float(p[1]) for p in pairs])
                mask[i, width - n + j] = True
    return {"topk_ids": ids, "topk_logprobs": logprobs, "topk_mask": mask, "topk_row": has_row}


def _pairs(row) -> list:
    """One row's ``teacher_topk`` as plain lists (Ray Data hands nested numpy object arrays)."""
    if row is None:
        return []
    return [list(token) if token is not None else [] for token in row]


def privacy_tensor(tokenizer, labels: torch.Tensor, patterns: Sequence[str], scorer: str = "regex",
                   terms: Sequence[str] = ()) -> torch.Tensor:
    from distill_ray.train.privacy import text_scorer, token_scores

    score_text = text_scorer(scorer, patterns, terms)
    scores = torch.zeros(labels.shape)
    for i in range(labels.shape[0]):
        positions = (labels[i] != IGNORE_INDEX).nonzero().flatten()
        if len(positions):
            scores[i, positions] = torch.tensor(token_scores(tokenizer, labels[i, positions].tolist(),
                                                             scorer=score_text))
    return scores


def with_demonstrations(prompts: list[str], targets: list[str], shots: int, rng: random.Random,
                        separator: str, tasks: Sequence | None = None) -> list[str]:
    """Each prompt preceded by ``shots`` rows' prompt + target (+ EOS, newline), drawn from the batch among
    rows of another task (``tasks``, default: another prompt): a demonstration of the row's own task would
    show it an answer to its own question. Fewer candidates, fewer shots. Too long inputs lose their
    earliest demonstrations first (``encode_example`` cuts prompts on the left)."""
    tasks = list(tasks) if tasks is not None else prompts
    out = []
    for i, prompt in enumerate(prompts):
        others = [j for j in range(len(prompts)) if tasks[j] != tasks[i]]
        demos = rng.sample(others, min(shots, len(others)))
        out.append("".join(f"{prompts[j]}{targets[j]}{separator}\n" for j in demos) + prompt)
    return out
