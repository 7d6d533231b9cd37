"""Span infilling for a causal decoder: the ``mlm`` objective's inputs (PanGu-Coder's masked LM, decoder-style).

A decoder cannot see a masked token's right context, so the masked span is not predicted in place: it is
cut out of the target, a mask marker stands where it was, and the model writes it after the whole sequence
(InCoder's causal masking, Fried et al. 2022)::

    prompt + target[:a] + MASK + target[b:] + FILL  ->  target[a:b] + EOS

Why this form rather than fill-in-the-middle's prefix/suffix/middle reordering: the surrounding code keeps its
own order (prefix, hole, suffix read left to right, as in plain CLM), so the one change from an ``sft`` row is the
hole and what follows FILL. The markers are plain text (any tokenizer has them; SmolLM2's FIM tokens would
tie the objective to one vocabulary). The loss covers the span and the EOS that ends it (the model learns to
stop after the span); the prompt, the context around the hole and the markers carry none: the span is the
only thing the model has not seen. One contiguous span per row, ``fraction`` of its target tokens long, its
start drawn from the caller's ``rng`` (seeded per micro-batch position: a resumed run masks the same spans).
"""

from __future__ import annotations

import random
from typing import Sequence

from distill_ray.train.data import Example, encode_example

MASK_TEXT = "<|mask|>"     # stands where the span was
FILL_TEXT = "\n<|fill|>"   # after the sequence: the span follows


def span_bounds(length: int, fraction: float, rng: random.Random) -> tuple[int, int]:
    """``(a, b)``: a span of ``max(1, round(fraction * length))`` of ``length`` tokens, start uniform;
    ``(0, 0)`` for an empty target."""
    if length <= 0:
        return 0, 0
    size = min(length, max(1, round(fraction * length)))
    start = rng.randrange(length - size + 1)
    return start, start + size


def infill_example(prompt_ids: Sequence[int], target_ids: Sequence[int], span: tuple[int, int],
                   mask_ids: Sequence[int], fill_ids: Sequence[int], eos_id: int | None, max_length: int) -> Example:
    """The row with ``target[a:b]`` moved behind the sequence (see the module docstring); everything before
    the span's new place is context (``num_prompt``), cut on the left when too long, as a prompt is."""
    a, b = span
    target = list(target_ids)
    context = [*prompt_ids, *target[:a], *mask_ids, *target[b:], *fill_ids]
    return encode_example(context, target[a:b], eos_id, max_length)


def infill_rows(tokenizer, prompts: Sequence[str], targets: Sequence[str], max_length: int, rng: random.Random,
                fraction: float) -> list[Example]:
    """A micro-batch's infilling examples, one span per row drawn in row order from ``rng``. The span is drawn
    among the target tokens an ``sft`` row keeps (its first ``max_length - 1``: ``encode_example``)."""
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    target_ids = [ids[:max_length - 1] for ids in tokenizer(list(targets), add_special_tokens=False)["input_ids"]]
    mask_ids, fill_ids = (tokenizer(text, add_special_tokens=False)["input_ids"] for text in (MASK_TEXT, FILL_TEXT))
    return [infill_example(p, t, span_bounds(len(t), fraction, rng), mask_ids, fill_ids, tokenizer.eos_token_id,
                           max_length)
            for p, t in zip(prompt_ids, target_ids)]
