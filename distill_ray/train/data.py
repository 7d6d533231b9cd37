"""Turn (prompt_text, target_text) rows into padded training batches with the loss on target tokens only.

Rows are tokenized inside the training workers, one Ray Data batch at a time, so the driver never holds
token ids. Batches are padded on the *left*: every row's target then ends at the last position, so the
loss only needs logits for the last ``max_target_len + 1`` positions (``logits_to_keep``), which skips the
vocabulary projection over long few-shot prompts. Explicit ``position_ids`` keep positions starting at 0
after the padding, as in generation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

PROMPT_COLUMN = "prompt_text"
TARGET_COLUMN = "target_text"
IGNORE_INDEX = -100  # labels ignored by the loss (prompt tokens, padding)


@dataclass
class Example:
    input_ids: list[int]
    num_prompt: int        # the first num_prompt ids are prompt; the rest are target (+ EOS)

    @property
    def num_target(self) -> int:
        return len(self.input_ids) - self.num_prompt


def encode_example(prompt_ids: Sequence[int], target_ids: Sequence[int], eos_id: int | None,
                   max_length: int) -> Example:
    """Prompt + target (+ EOS), at most ``max_length`` ids. Too long: drop prompt tokens from the left
    (the start of a few-shot prompt matters least); a target longer than ``max_length`` alone keeps its
    first ``max_length`` ids and loses the prompt entirely (there is nothing to condition on anyway)."""
    target = list(target_ids) + ([eos_id] if eos_id is not None else [])
    if len(target) >= max_length:
        return Example(input_ids=target[:max_length], num_prompt=0)
    keep = max_length - len(target)
    prompt = list(prompt_ids)[-keep:] if len(prompt_ids) > keep else list(prompt_ids)
    return Example(input_ids=prompt + target, num_prompt=len(prompt))


def tokenize_rows(tokenizer, prompts: Sequence[str], targets: Sequence[str], max_length: int) -> list[Example]:
    """Tokenize a batch of rows. Prompt and target are tokenized separately so the boundary between them is
    exact; no special tokens are added (the prompt is already chat-templated) except the EOS after the
    target, which teaches the student to stop."""
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(list(targets), add_special_tokens=False)["input_ids"]
    return [encode_example(p, t, tokenizer.eos_token_id, max_length) for p, t in zip(prompt_ids, target_ids)]


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad examples into tensors: input_ids, attention_mask, position_ids, labels (IGNORE_INDEX on
    prompt and padding). ``labels[:, i]`` is the label of token ``i`` (not shifted)."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        start = width - len(example.input_ids)
        input_ids[row, start:] = torch.tensor(example.input_ids)
        attention_mask[row, start:] = 1
        labels[row, start + example.num_prompt:] = torch.tensor(example.input_ids[example.num_prompt:])
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
            "labels": labels}


def max_target_len(batch: dict[str, torch.Tensor]) -> int:
    """Longest labelled suffix in a left-padded batch (how many final positions carry a label)."""
    labelled = (batch["labels"] != IGNORE_INDEX).any(dim=0)
    positions = labelled.nonzero()
    return int(batch["labels"].shape[1] - positions[0]) if len(positions) else 0


OPTIONAL_COLUMNS = ("label_weight", "teacher_topk", "task_id", "rationale_text")  # read when present (soft labels,
# stored teacher top-k, the task a row answers: icl never shows a row its own task; KNIFE's rationale)


def as_dataset(data, columns: Sequence[str] = (PROMPT_COLUMN, TARGET_COLUMN),
               optional: Sequence[str] = OPTIONAL_COLUMNS):
    """A Ray Dataset with only the training columns (and those of ``optional`` it has), from a Dataset or a
    Parquet path. A lazy pipeline whose schema is unknown keeps all its columns: finding out would run it."""
    import ray.data

    if isinstance(data, (str, Path)):
        import pyarrow.dataset

        names = pyarrow.dataset.dataset(str(data), format="parquet").schema.names
        data = ray.data.read_parquet(str(data), columns=[c for c in [*columns, *optional] if c in names])
    schema = data.schema(fetch_if_missing=False)  # never execute a lazy pipeline just to check
    if schema is None:
        return data
    missing = set(columns) - set(schema.names)
    if missing:
        raise ValueError(f"training data lacks column(s) {sorted(missing)}")
    return data.select_columns([*columns, *(c for c in optional if c in schema.names)])


def aligned_topk(tokenizer, completion: str, target: str, logprobs: str | None) -> list | None:
    """The teacher's stored top-k logprobs (``logprobs`` column, JSON) for the target's tokens, or None where
    they cannot be trusted to line up. The target must be the completion's beginning (extraction cuts what
    follows the program and ends it with a newline the teacher may not have written: then only the tokens
    before that newline get entries), and the student's tokenizer must split the completion into as many
    tokens as the teacher generated (same vocabulary, canonical tokenization). None rows fall back to the
    teacher model loaded in the workers (kd/swing)."""
    if not logprobs:
        return None
    stem = target if completion.startswith(target) else target.rstrip()
    if not stem or not completion.startswith(stem):
        return None
    entries = json.loads(logprobs)
    completion_ids, stem_ids, target_ids = (tokenizer(text, add_special_tokens=False)["input_ids"]
                                            for text in (completion, stem, target))
    # The teacher may also have an entry for its stop token, after the completion's text.
    lined_up = (len(entries) in (len(completion_ids), len(completion_ids) + 1)
                and completion_ids[:len(stem_ids)] == stem_ids == target_ids[:len(stem_ids)])
    return entries[:len(stem_ids)] if lined_up else None
