"""Distillation objectives: hand-computed losses, batch extras, and each objective training on Ray Train."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from distill_ray.train import losses
from distill_ray.train.batch import make_batch, with_demonstrations
from distill_ray.train.data import IGNORE_INDEX
from distill_ray.train.objectives import DistillParams, Objective

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def test_kl_full_with_temperature_is_scaled_by_t_squared():
    teacher = torch.tensor([[0.0, math.log(3.0)]])   # T=1: p = [1/4, 3/4]
    student = torch.tensor([[0.0, 0.0]])             # q = [1/2, 1/2] at any T
    assert losses.kl_full(student, teacher, 1.0).item() == pytest.approx(
        0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-5)
    # T=2: p = softmax([0, ln3 / 2]) = [1, sqrt3] / (1 + sqrt3); times T^2 = 4.
    p = [1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))]
    expected = 4 * sum(pi * math.log(pi / 0.5) for pi in p)
    assert losses.kl_full(student, teacher, 2.0).item() == pytest.approx(expected, rel=1e-5)
    # Per-token temperatures equal per-row scalar calls.
    both = losses.kl_full(student.repeat(2, 1), teacher.repeat(2, 1), torch.tensor([1.0, 2.0]))
    assert both.tolist() == pytest.approx([losses.kl_full(student, teacher, t).item() for t in (1.0, 2.0)])


def test_kl_topk_renormalises_teacher_and_student_over_the_stored_ids():
    student = torch.zeros(1, 4)  # q = 1/4 on each of 4 tokens: 1/2 each over any two ids
    ids = torch.tensor([[2, 0]])
    logprobs = torch.tensor([[math.log(0.6), math.log(0.2)]])  # renormalised: [0.75, 0.25]
    assert losses.kl_topk(student, ids, logprobs, 1.0).item() == pytest.approx(
        0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5), rel=1e-5)
    # One stored entry says nothing about the shape among the ids: both renormalise to [1].
    missing = torch.tensor([[math.log(0.5), float("-inf")]])
    assert losses.kl_topk(student, ids, missing, 1.0).item() == pytest.approx(0.0, abs=1e-7)
    # T=2 over the top-k: p ∝ [0.6, 0.2] ** 0.5; the student stays uniform over the two ids; times T^2.
    p = torch.tensor([0.6, 0.2]).sqrt() / torch.tensor([0.6, 0.2]).sqrt().sum()
    expected = 4 * float((p * (p.log() - math.log(0.5))).sum())
    assert losses.kl_topk(student, ids, logprobs, 2.0).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 8.0])
def test_kl_topk_is_zero_when_the_student_is_the_teacher(temperature):
    """The old loss (teacher renormalised, student not) gave 0.215 / 7.33 / 451.6 here."""
    logits = torch.randn(32, 500, generator=torch.Generator().manual_seed(0)) * 3
    top = torch.log_softmax(logits, dim=-1).topk(5, dim=-1)
    student = logits.clone().requires_grad_(True)
    kd = losses.kl_topk(student, top.indices, top.values, temperature)
    assert kd.abs().max().item() < 1e-6
    # Away from equality, only the stored ids get a gradient: a label outside the top-k is never pushed down.
    loss = losses.kl_topk(student + torch.randn(32, 500) * 0.5, top.indices, top.values, temperature).sum()
    loss.backward()
    outside = torch.ones_like(logits, dtype=torch.bool).scatter(1, top.indices, False)
    assert loss.item() > 0 and student.grad[outside].abs().max().item() == 0.0


def test_soft_label_sum_weights_each_row():
    nll = torch.tensor([[1.0, 2.0], [3.0, 0.0]])   # row 1's second token is off target (NLL 0)
    assert losses.soft_label_sum(nll, torch.tensor([0.5, 1.0])).item() == pytest.approx(0.5 * 3 + 3)
    assert losses.soft_label_sum(nll, torch.tensor([0.0, 0.0])).item() == 0.0


def test_swing_temperature_rises_with_privacy_and_noise_is_seeded():
    assert losses.swing_temperatures(torch.tensor([0.0, 0.5, 1.0, 2.0]), 2.0, 8.0).tolist() == [2.0, 5.0, 8.0, 8.0]
    logits = torch.tensor([[0.0, 1.0, float("-inf")]]).repeat(4000, 1)
    a = losses.add_noise(logits, 0.5, torch.Generator().manual_seed(7))
    b = losses.add_noise(logits, 0.5, torch.Generator().manual_seed(7))
    c = losses.add_noise(logits, 0.5, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isinf(a[:, 2]).all()
    assert (a[:, :2] - logits[:, :2]).std().item() == pytest.approx(0.5, rel=0.05)
    per_token = losses.add_noise(logits[:2], torch.tensor([0.0, 1.0]), torch.Generator().manual_seed(7))
    assert torch.equal(per_token[0], logits[0]) and not torch.equal(per_token[1], logits[1])
    assert losses.add_noise(logits, 0.0, None) is logits


def _rows(weights=None, topk=None):
    rows = {"prompt_text": [CHAT.format("Say red"), CHAT.format("Pick"), CHAT.format("x")],
            "target_text": ["red red", "Tom 42", "ok"]}
    if weights is not None:
        rows["label_weight"] = weights
    if topk is not None:
        rows["teacher_topk"] = topk
    return rows


def test_batch_places_stored_topk_on_target_tokens(tokenizer):
    topk = [[[[7, -0.1], [8, -2.0]], [[9, -0.3]]], None, [[[5, -1.0]]]]
    batch = make_batch(_rows([0.5, None, float("nan")], topk), tokenizer, 64, tokenizer.pad_token_id,
                       {"label_weight", "topk", "privacy"}, privacy_patterns=[r"\d+"])
    assert batch["label_weight"].tolist() == [0.5, 1.0, 1.0]
    labels = batch["labels"]
    for row, entries in enumerate(topk):
        first = int((labels[row] != IGNORE_INDEX).nonzero()[0])  # the first target token's column
        stored = batch["topk_mask"][row].nonzero().flatten().tolist()
        assert stored == list(range(first, first + len(entries or [])))
        for j, pairs in enumerate(entries or []):
            assert batch["topk_ids"][row, first + j, :len(pairs)].tolist() == [p[0] for p in pairs]
    assert batch["topk_logprobs"][0, first_of(labels, 0) + 1, 1] == float("-inf")
    # privacy: only target tokens are scored; "42" matches the user's pattern (the default scorer leaves
    # short numbers alone: tests/train/test_privacy.py).
    private = batch["privacy"][1][labels[1] != IGNORE_INDEX].tolist()
    assert private[0] == 0.0 and max(private) == 1.0
    assert (batch["privacy"][labels == IGNORE_INDEX] == 0).all()


def first_of(labels, row):
    return int((labels[row] != IGNORE_INDEX).nonzero()[0])


def test_icl_inputs_carry_other_rows_and_only_the_final_target_is_labelled(tokenizer):
    prompts, targets = ["P0:", "P1:", "P2:", "P3:"], ["a", "b", "c", "d"]
    demos = with_demonstrations(prompts, targets, 2, random.Random(3), "<E>")
    assert demos == with_demonstrations(prompts, targets, 2, random.Random(3), "<E>")
    for i, text in enumerate(demos):
        assert text.endswith(prompts[i]) and text.count("<E>\n") == 2 and f"{prompts[i]}{targets[i]}" not in text
    batch = make_batch({"prompt_text": prompts, "target_text": targets}, tokenizer, 64, tokenizer.pad_token_id,
                       {"icl"}, random.Random(3), icl_shots=2)
    for row, target in enumerate(targets):
        labels = batch["icl"]["labels"][row]
        assert tokenizer.decode(labels[labels != IGNORE_INDEX]) == target + tokenizer.eos_token


def test_objectives_combine_with_weights_and_reduce_to_known_cases(tiny_dirs, tokenizer):
    from transformers import AutoModelForCausalLM

    student, teacher = (AutoModelForCausalLM.from_pretrained(d) for d in tiny_dirs)
    needs = {"label_weight", "topk", "privacy", "icl"}
    batch = make_batch(_rows([1.0, 1.0, 1.0]), tokenizer, 64, tokenizer.pad_token_id, needs, random.Random(0))
    sft = Objective({"sft": 1.0})(student, batch).loss.item()
    assert Objective({"soft": 1.0})(student, batch).loss.item() == pytest.approx(sft, rel=1e-5)
    combined = Objective({"sft": 1.0, "kd": 0.5}, teacher=teacher)(student, batch)
    assert combined.loss.item() == pytest.approx(sft + 0.5 * combined.parts["kd"], rel=1e-5)
    # The student is its own perfect teacher: kd is 0, swing without noise too.
    assert Objective({"kd": 1.0}, teacher=student)(student, batch).loss.item() == pytest.approx(0.0, abs=1e-5)
    quiet = DistillParams(swing_noise=0.0)
    assert Objective({"swing": 1.0}, quiet, teacher=student)(student, batch).loss.item() == pytest.approx(0.0, abs=1e-5)
    noisy = [Objective({"swing": 1.0}, teacher=teacher)(student, batch, torch.Generator().manual_seed(s)).loss.item()
             for s in (1, 1, 2)]
    assert noisy[0] == noisy[1] != noisy[2]
    with pytest.raises(ValueError, match="teacher"):
        Objective({"kd": 1.0})(student, batch)
    with pytest.raises(ValueError, match="unknown"):
        Objective({"distill": 1.0})


def _train_rows(tokenizer) -> list[dict]:
    """8 rows = one fixed micro-batch of 4 per worker, seen again every epoch. Rows carry the vote's
    label_weight and stored teacher top-k (the true token likely, two others not)."""
    rows = []
    for i, word in enumerate(["red", "green", "blue", "cat"] * 2):
        target = f"{word} {i} {word}"
        ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        topk = [[[t, -0.2], [(t + 1) % 1000, -2.5], [(t + 7) % 1000, -3.0]] for t in ids]
        rows.append({"prompt_text": CHAT.format(f"Say {word}"), "target_text": target,
                     "label_weight": 1.0 if i < 4 else 0.5, "teacher_topk": topk})
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("objectives", [{"soft": 1.0}, {"sft": 1.0, "kd": 0.5}, {"swing": 1.0},
                                        {"sft": 1.0, "icl": 0.5}, {"sft": 1.0, "rkd_distance": 1.0, "rkd_angle": 1.0}],
                         ids=["soft", "kd", "swing", "icl", "rkd"])
def test_each_objective_trains_on_two_ray_train_workers(ray_cluster, tiny_dirs, tokenizer, tmp_path, objectives):
    """kd reads a teacher model in the workers (its rows' stored top-k are dropped); swing reads the
    stored top-k (no teacher model); soft reads label_weight; rkd the teacher model's embeddings."""
    import ray.data

    from distill_ray.train import TrainSettings, train_student

    student_dir, teacher_dir = tiny_dirs
    rows = _train_rows(tokenizer)
    if "kd" in objectives:
        rows = [{k: v for k, v in row.items() if k != "teacher_topk"} for row in rows]
    # swing's private tokens train at T up to 8, where a weight update moves logits/T slowly: more steps.
    epochs, fall = (6, 0.97) if "swing" in objectives else (4, 0.9)
    settings = TrainSettings(workers=2, zero_stage=2, epochs=epochs, batch_size=4, lr=1e-2, log_every=0,
                             objectives=objectives, teacher_dir=str(teacher_dir), icl_shots=2)
    result = train_student(student_dir, ray.data.from_items(rows), tmp_path / "student", settings)

    assert result.steps == epochs
    assert result.loss_history[-1] < fall * result.loss_history[0], result.loss_history


class _DigitScorer(torch.nn.Module):
    """A stand-in model whose next-token logits are the same at every position: ``scores`` on digit tokens."""

    def __init__(self, tokenizer, scores: dict[str, float]):
        super().__init__()
        self.logits = torch.full((len(tokenizer),), -30.0)
        for digit in "0123456789":
            self.logits[tokenizer.convert_tokens_to_ids(digit)] = scores.get(digit, 0.0)

    def forward(self, input_ids, use_cache=False, logits_to_keep=1):
        return type("Out", (), {"logits": self.logits.expand(input_ids.shape[0], logits_to_keep, -1)})()


def test_canary_exposure_ranks_the_secret_among_all_candidates(tokenizer):
    from distill_ray.train.canary import Canary, exposure, insert_canaries, make_canaries

    canary = Canary("Alice", "42")
    # "4" then "2" both favoured equally: 42, 24, 44, 22 tie; ties count against the secret (rank 4 of 100).
    assert exposure(_DigitScorer(tokenizer, {"4": 1.0, "2": 1.0}), tokenizer, canary) == pytest.approx(
        math.log2(100) - 2)
    # "4" favoured more: 44 (4) beats 42 = 24 (3): rank 3.
    assert exposure(_DigitScorer(tokenizer, {"4": 2.0, "2": 1.0}), tokenizer, canary) == pytest.approx(
        math.log2(100) - math.log2(3))
    assert exposure(_DigitScorer(tokenizer, {"4": 2.0, "2": 1.5}), tokenizer, Canary("Bob", "44")) == pytest.approx(
        math.log2(100))
    canaries = make_canaries(3, 4, seed=1)
    assert canaries == make_canaries(3, 4, seed=1) and all(len(c.secret) == 4 for c in canaries)
    rows = insert_canaries([{"prompt_text": "p", "target_text": "t"}], canaries, repeats=2, seed=0)
    assert len(rows) == 7 and sum(r["target_text"] == canaries[0].row()["target_text"] for r in rows) == 2


@pytest.mark.slow
def test_parquet_training_data_keeps_the_optional_columns_it_has(ray_cluster, tmp_path):
    import pandas as pd

    from distill_ray.train.data import as_dataset

    pd.DataFrame({"prompt_text": ["p"], "target_text": ["t"], "label_weight": [0.5], "task_id": ["x"],
                  "program": ["return 1"]}).to_parquet(tmp_path / "part-0.parquet")
    assert as_dataset(tmp_path).take_all() == [{"prompt_text": "p", "target_text": "t", "label_weight": 0.5,
                                                "task_id": "x"}]
    pd.DataFrame({"prompt_text": ["p"]}).to_parquet(tmp_path / "part-0.parquet")
    with pytest.raises(ValueError, match="target_text"):
        as_dataset(tmp_path)


def test_stored_logprobs_line_up_with_the_target_only_when_the_tokens_do(tokenizer):
    from distill_ray.train.data import aligned_topk

    def entries(text, extra=0):
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + extra
        return json.dumps([[[i, -0.5], [i + 1, -1.5]] for i in range(n)])

    completion = "19 - 7\n\nprint(sol())"
    stored = aligned_topk(tokenizer, completion, "19 - 7\n", entries(completion))
    assert stored == json.loads(entries(completion))[:len(tokenizer("19 - 7\n", add_special_tokens=False)["input_ids"])]
    # The teacher stopped right after the expression: extraction's closing newline gets no entry.
    short = aligned_topk(tokenizer, "19 - 7", "19 - 7\n", entries("19 - 7", extra=1))
    assert len(short) == len(tokenizer("19 - 7", add_special_tokens=False)["input_ids"])
    assert aligned_topk(tokenizer, "apples = 3\nreturn apples", "    apples = 3\n    return apples\n",
                        entries("apples = 3\nreturn apples")) is None        # re-indented: not the teacher's text
    assert aligned_topk(tokenizer, completion, "19 - 7\n", entries(completion, extra=5)) is None  # other vocab
    assert aligned_topk(tokenizer, completion, "19 - 7\n", None) is None


def test_student_rows_take_topk_only_from_teachers_of_the_students_vocabulary(tokenizer):
    import pandas as pd

    from distill_ray.models import resolve_model
    from distill_ray.workflow import student_rows

    n = len(tokenizer("5", add_special_tokens=False)["input_ids"])
    logprobs = json.dumps([[[1, -0.1]]] * n)
    batch = pd.DataFrame({"task_id": ["a", "a"], "kind": ["p3", "p3"], "question": ["def sat(x: int):\n    return x == 5"] * 2,
                          "program": ["def sol():\n    return 5\n"] * 2, "completion": ["5", "5"],
                          "teacher": ["smollm2", "gemma3"], "logprobs": [logprobs, logprobs]})
    rows = student_rows(batch, resolve_model("smollm2"), same_vocab=("smollm2",))
    assert rows["target_text"].tolist() == ["5\n", "5\n"]
    assert rows["teacher_topk"].iloc[0] == [[[1, -0.1]]] * n and rows["teacher_topk"].iloc[1] is None
    assert "teacher_topk" not in student_rows(batch.drop(columns="logprobs"), resolve_model("smollm2"))
