"""From one step's rollouts (the student's completions, the teachers' scores, the verifier's verdicts) to a
training micro-batch: pure functions over lists and arrays, no actors, no models.

A rollout is one student completion of one problem: its token ids (the student's own vocabulary, with the
end-of-turn token when it stopped), the teachers' top-k log-probabilities at each of those tokens, and
whether the verifier passed the program in it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from distill_ray.train.batch import topk_tensors
from distill_ray.train.data import collate, encode_example


def combine_teachers(scores: Sequence[tuple[np.ndarray, np.ndarray]], weights: Sequence[float],
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """Several teachers' top-k at the positions of one completion as one distribution per position: the
    weighted mixture sum_i w_i p_i / sum_i w_i over the union of their ids (a teacher gives 0 to an id
    outside its top-k), renormalised over that union and cut to its ``len(scores) * k`` most likely ids.
    scores: per teacher ``(ids [L, k], logprobs [L, k])``; returns ``(ids [L, K], logprobs [L, K])``, entries
    past a position's union padded with id 0 and logprob -inf. One teacher: its own top-k, renormalised."""
    length = len(scores[0][0])
    total = float(sum(weights))
    width = k * len(scores)
    out_ids = np.zeros((length, width), np.int64)
    out_logprobs = np.full((length, width), -np.inf, np.float64)
    for position in range(length):
        mass: dict[int, float] = {}
        for (ids, logprobs), weight in zip(scores, weights):
            for token, logprob in zip(ids[position][:k], logprobs[position][:k]):
                mass[int(token)] = mass.get(int(token), 0.0) + weight / total * math.exp(float(logprob))
        ranked = sorted(mass.items(), key=lambda item: -item[1])[:width]
        norm = sum(p for _, p in ranked)
        for column, (token, p) in enumerate(ranked):
            out_ids[position, column] = token
            out_logprobs[position, column] = math.log(p / norm) if p > 0 else -np.inf
    return out_ids, out_logprobs


def row_weights(passed: Sequence[bool], mode: str, wrong_weight: float) -> list[float]:
    """Each completion's weight in the divergence: ``none`` 1 for all; ``weight`` 1 if verified, else
    ``wrong_weight``; ``filter`` 1 if verified, else 0."""
    if mode == "none":
        return [1.0] * len(passed)
    if mode == "weight":
        return [1.0 if ok else wrong_weight for ok in passed]
    if mode == "filter":
        return [1.0 if ok else 0.0 for ok in passed]
    raise ValueError(f"unknown verifier mode {mode!r}: none, weight or filter")


def rollout_batch(prompt_ids: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                  teacher_topk: Sequence[tuple[np.ndarray, np.ndarray]], weights: Sequence[float],
                  passed: Sequence[bool], max_length: int, pad_id: int) -> dict[str, torch.Tensor]:
    """The micro-batch of a step's rollouts, laid out as ``data.collate`` lays out offline rows (left-padded,
    labels on the completion tokens), plus the teachers' distributions on those tokens (``topk_*``, as
    ``batch.topk_tensors`` places stored top-k), ``row_weight`` [B] and ``verified`` [B]. A completion keeps
    all of its tokens (the prompt is cut from the left when too long); an empty one has no target tokens."""
    examples = [encode_example(p, c, None, max_length) for p, c in zip(prompt_ids, completions)]
    batch = collate(examples, pad_id)
    column = []
    for example, (ids, logprobs) in zip(examples, teacher_topk):
        kept = example.num_target     # a completion longer than max_length keeps its first tokens
        column.append([list(zip(ids[j].tolist(), logprobs[j].tolist())) for j in range(kept)])
    batch.update(topk_tensors(column, batch["labels"]))
    batch["row_weight"] = torch.tensor(list(weights), dtype=torch.float32)
    batch["verified"] = torch.tensor(list(passed), dtype=torch.bool)
    return batch
