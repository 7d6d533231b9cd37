"""Relational KD (RKD): the distance and angle losses and the objective terms that use them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill_ray.train import losses
from distill_ray.train.batch import make_batch
from distill_ray.train.objectives import Objective

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def _similar(x: torch.Tensor, width: int, seed: int = 0) -> torch.Tensor:
    """x rotated into a wider space, scaled and shifted: the same relational structure."""
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(width, width, generator=generator))
    padded = torch.cat([x, torch.zeros(len(x), width - x.shape[1])], dim=1)
    return padded @ rotation * 3.0 + 1.5


@pytest.mark.parametrize("loss", [losses.rkd_distance, losses.rkd_angle])
def test_rkd_is_zero_for_the_same_structure_in_another_space_and_positive_otherwise(loss):
    student = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    assert loss(student, _similar(student, 16)).item() < 1e-10
    assert loss(student, torch.randn(6, 16, generator=torch.Generator().manual_seed(2))).item() > 1e-3
    assert loss(student[:1], student[:1]).item() == 0.0                        # too few examples: no structure


def test_rkd_distance_and_angle_match_a_hand_computed_triangle():
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    s_pairs, t_pairs = [1, 1, math.sqrt(2)], [2, 1, math.sqrt(5)]            # d01, d02, d12
    s_mean, t_mean = sum(s_pairs) / 3, sum(t_pairs) / 3
    expected = sum(F.smooth_l1_loss(torch.tensor(s / s_mean), torch.tensor(t / t_mean)).item()
                   for s, t in zip(s_pairs, t_pairs)) / 3
    assert losses.rkd_distance(student, teacher).item() == pytest.approx(expected, rel=1e-5)
    # cosines at each vertex; the student is a right isosceles triangle, the teacher a right 2:1 one
    s_cos = {0: 0.0, 1: 1 / math.sqrt(2), 2: 1 / math.sqrt(2)}
    t_cos = {0: 0.0, 1: 2 / math.sqrt(5), 2: 1 / math.sqrt(5)}
    # each vertex j has 9 (i, k) entries: (i, k) both != j gives 2 cos = 1 entries and 2 cos(angle) entries
    diffs = [0.0] * 27
    for j in range(3):
        diffs[j * 9] = F.smooth_l1_loss(torch.tensor(s_cos[j]), torch.tensor(t_cos[j])).item() * 2
    expected_angle = sum(diffs) / 27
    assert losses.rkd_angle(student, teacher).item() == pytest.approx(expected_angle, rel=1e-5)


@pytest.mark.parametrize("term", ["rkd_distance", "rkd_angle"])
def test_the_rkd_term_is_zero_for_the_teacher_itself_and_trains_the_student(term, tokenizer, tiny_dirs):
    from transformers import AutoModelForCausalLM

    rows = {"prompt_text": [CHAT.format(q) for q in ("Say red", "Pick a number", "x", "Add 2 and 3")],
            "target_text": ["red red", "Tom 42", "ok", "5"]}
    batch = make_batch(rows, tokenizer, 64, tokenizer.pad_token_id, set())
    student, teacher = (AutoModelForCausalLM.from_pretrained(d) for d in tiny_dirs)
    assert Objective({term: 1.0}, teacher=student).__call__(student, batch).loss.item() < 1e-8
    out = Objective({term: 1.0}, teacher=teacher)(student, batch)
    assert out.loss.item() > 0 and out.tokens == int((batch["labels"] != -100).sum())
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    with pytest.raises(ValueError, match="teacher model"):
        Objective({term: 1.0})(student, batch)
