"""KNIFE (Chan et al., 2022): distilling the knowledge of free-text rationales into a student that reads the input only.

The paper's T5 teacher encodes input + rationale and its decoder cross-attends to the *input* tokens' encoder
states only: the rationale's states are masked out, a bottleneck that forces what the rationale tells the answer
into the input tokens' states; the input-only student then matches its input states and its decoder states to the
teacher's. For a decoder-only model (ours):

- teacher rows are ``[rationale, input, target]``; the bottleneck mask (``bottleneck_mask``) keeps the causal mask
  but lets no target position attend to a rationale position. The input tokens sit after the rationale and attend
  to it, so the target reads the rationale only through the input tokens' states (tested: with those states held
  fixed, the target's logits do not move when the rationale changes).
- ``knife_teacher`` fine-tunes the teacher through that bottleneck: cross-entropy on the target of those rows.
- ``knife``: the student reads ``[input, target]`` (the ordinary row); the MSE between its hidden states and the
  KNIFE teacher's at the same tokens (every input and target token, lined up from the end of each row, left
  padding included), at ``knife_layers``. Teacher and student must have the same width (KNIFE's have the same
  architecture; a learned projection is not built).

The rationale is column ``rationale_text`` of the training rows (a verified program or chain, say); it is cut to
its last ``max_length`` tokens, so a teacher row is at most twice a student row.
"""

from __future__ import annotations

from typing import Sequence

import torch

from distill_ray.train import losses
from distill_ray.train.data import IGNORE_INDEX, Example, collate

RATIONALE_COLUMN = "rationale_text"


def teacher_batch(tokenizer, rationales: Sequence[str], examples: Sequence[Example], max_length: int,
                  pad_id: int) -> dict[str, torch.Tensor]:
    """The teacher's rows: each rationale (its last ``max_length`` tokens) before the student's own example
    (prompt + target, tokenized as the student's), collated like a student batch, plus ``rationale`` [B, W]: True on
    the rationale's positions (what the target may not attend to)."""
    ids = tokenizer([str(r) for r in rationales], add_special_tokens=False)["input_ids"]
    cut = [list(r)[-max_length:] for r in ids]
    batch = collate([Example(input_ids=r + e.input_ids, num_prompt=len(r) + e.num_prompt)
                     for r, e in zip(cut, examples)], pad_id)
    width = batch["input_ids"].shape[1]
    rationale = torch.zeros((len(cut), width), dtype=torch.bool)
    for row, (r, e) in enumerate(zip(cut, examples)):
        start = width - len(r) - len(e.input_ids)
        rationale[row, start:start + len(r)] = True
    batch["rationale"] = rationale
    return batch


def bottleneck_mask(batch: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, W, W] additive attention mask (0: attend, the dtype's minimum: not): causal over the real tokens, except
    that a target position (``labels`` != IGNORE_INDEX) attends to no ``rationale`` position. Every position attends
    to itself, so a padding row is never empty. Transformers takes a 4D mask as it is (eager adds it to the scores;
    SDPA takes it as the float mask it is)."""
    real, rationale = batch["attention_mask"].bool(), batch["rationale"].bool()
    target = batch["labels"] != IGNORE_INDEX
    width = real.shape[1]
    causal = torch.ones((width, width), dtype=torch.bool, device=real.device).tril()
    allowed = causal[None] & real[:, None, :] & ~(target[:, :, None] & rationale[:, None, :])
    allowed |= torch.eye(width, dtype=torch.bool, device=real.device)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=real.device).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def attention(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mask to run ``batch`` with: the bottleneck for a teacher batch (one with ``rationale``), else its own."""
    if "rationale" not in batch:
        return batch["attention_mask"]
    return bottleneck_mask(batch, next(model.parameters()).dtype)


@torch.no_grad()
def teacher_states(teacher, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The KNIFE teacher's hidden states (embeddings first, then every layer's output) over its own rows."""
    out = teacher(input_ids=batch["input_ids"], attention_mask=attention(teacher, batch),
                  position_ids=batch["position_ids"], use_cache=False, logits_to_keep=1, output_hidden_states=True)
    return out.hidden_states


def alignment(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], attention_mask: torch.Tensor,
              layers: Sequence[int]) -> torch.Tensor:
    """KNIFE's loss: the mean over ``layers`` (indexes into each model's hidden states, the student's and the
    teacher's each its own: -1 is the last) and over the student's real tokens of ``losses.hidden_mse`` between the
    student's state of a token and the teacher's state of the same token. Student rows are the teacher's without
    the rationale, both left-padded, so a student row's real tokens are the last ones of its teacher row too: the
    teacher's states are cut to the student's width from the left. ``attention_mask``: the student's [B, W]."""
    real = attention_mask.bool()
    width = real.shape[1]
    total = student[0].new_zeros(())
    for layer in layers:
        s, t = _layer(student, layer, "student"), _layer(teacher, layer, "teacher")
        if s.shape[-1] != t.shape[-1]:
            raise ValueError(f"knife matches hidden states of equal width: student {s.shape[-1]}, teacher "
                             f"{t.shape[-1]} (KNIFE's teacher and student share an architecture)")
        total = total + losses.hidden_mse(s[real], t[:, t.shape[1] - width:][real]).mean()
    return total / len(layers)


def _layer(states: Sequence[torch.Tensor], layer: int, who: str) -> torch.Tensor:
    if not -len(states) <= layer < len(states):
        raise ValueError(f"knife_layers: {layer} is out of range for the {who}'s {len(states)} hidden states")
    return states[layer]
