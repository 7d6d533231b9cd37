"""The distillation terms' contracts: kd from stored top-k is 0 for the teacher itself and never runs a
loaded teacher, tokens normalise across micro-batches, icl never shows a row its own task."""

from __future__ import annotations

import random

import pytest
import torch

from distill_ray.train import losses
from distill_ray.train.batch import make_batch
from distill_ray.train.data import IGNORE_INDEX
from distill_ray.train.objectives import Objective, forward

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def student(tokenizer, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from distill_ray.models import resolve_model
    from distill_ray.train import build_student_from_config

    path = build_student_from_config(resolve_model("smollm2"), tmp_path_factory.mktemp("tiny"), hidden_size=32,
                                     num_layers=1, num_heads=2, num_kv_heads=1, seed=0)
    return AutoModelForCausalLM.from_pretrained(path).eval()


class NeverCalled(torch.nn.Module):
    def forward(self, *args, **kwargs):
        raise AssertionError("the loaded teacher ran on rows that have stored top-k")


ROWS = {"prompt_text": [CHAT.format("Say red"), CHAT.format("Pick a number"), CHAT.format("x")],
        "target_text": ["red red", "Tom 42 and more", "ok"]}


def own_topk(model, tokenizer, rows: dict, k: int = 5, drop_last: bool = False) -> list:
    """Each row's stored top-k taken from ``model`` itself (one entry per target token, EOS included,
    or without the EOS's entry with ``drop_last``)."""
    batch = make_batch(rows, tokenizer, 64, tokenizer.pad_token_id, set())
    with torch.no_grad():
        fwd = forward(model, batch)
    top = torch.log_softmax(fwd.logits, dim=-1).topk(k, dim=-1)
    out = []
    for i in range(len(rows["prompt_text"])):
        positions = fwd.mask[i].nonzero().flatten().tolist()
        if drop_last:
            positions = positions[:-1]
        out.append([[[int(t), float(v)] for t, v in zip(top.indices[i, p], top.values[i, p])] for p in positions])
    return out


@pytest.mark.parametrize("temperature", [1.0, 2.0, 8.0])
def test_kd_is_zero_for_the_teachers_own_stored_topk_and_runs_no_teacher(student, tokenizer, temperature):
    from distill_ray.train.objectives import DistillParams

    rows = {**ROWS, "teacher_topk": own_topk(student, tokenizer, ROWS)}
    batch = make_batch(rows, tokenizer, 64, tokenizer.pad_token_id, {"topk"})
    params = DistillParams(kd_temperature=temperature)
    assert Objective({"kd": 1.0}, params, teacher=NeverCalled())(student, batch).loss.item() == pytest.approx(0, abs=1e-6)


def test_target_tokens_without_an_entry_take_the_hard_label(student, tokenizer):
    """The appended EOS has no stored entry: in the stored context it is a one-hot target (its NLL)."""
    rows = {**ROWS, "teacher_topk": own_topk(student, tokenizer, ROWS, drop_last=True)}
    batch = make_batch(rows, tokenizer, 64, tokenizer.pad_token_id, {"topk"})
    out = Objective({"kd": 1.0}, teacher=NeverCalled())(student, batch)
    fwd = forward(student, batch)
    nll = losses.token_nll(fwd.logits, fwd.labels)
    last = [int(fwd.mask[i].nonzero().max()) for i in range(3)]
    eos_nll = sum(float(nll[i, j].detach()) for i, j in enumerate(last))
    assert out.total == pytest.approx(eos_nll, rel=1e-4)   # the rest are the student's own top-k: KL 0
    assert out.total > 0


def test_rows_without_stored_topk_alone_run_the_teacher(student, tokenizer):
    calls = []

    class Counting(torch.nn.Module):
        def forward(self, input_ids, **kwargs):
            calls.append(input_ids.shape[0])
            return student(input_ids=input_ids, **kwargs)

    topk = own_topk(student, tokenizer, ROWS)
    rows = {**ROWS, "teacher_topk": [topk[0], None, topk[2]]}
    batch = make_batch(rows, tokenizer, 64, tokenizer.pad_token_id, {"topk"})
    assert Objective({"kd": 1.0}, teacher=Counting())(student, batch).loss.item() == pytest.approx(0, abs=1e-6)
    assert calls == [1]


def test_a_global_normaliser_makes_micro_batches_sum_to_the_full_batch(student, tokenizer):
    """Per target token across the global batch: two micro-batches of very different lengths, each divided
    by the tokens of both, add up to the whole batch's per-token mean."""
    objective = Objective({"sft": 1.0})
    whole = make_batch(ROWS, tokenizer, 64, tokenizer.pad_token_id, set())
    parts = [make_batch({k: v[s] for k, v in ROWS.items()}, tokenizer, 64, tokenizer.pad_token_id, set())
             for s in (slice(0, 1), slice(1, 3))]
    tokens = [objective.tokens(p) for p in parts]
    assert tokens[0] != tokens[1]
    summed = sum(objective(student, p, normaliser=sum(tokens)).loss.item() for p in parts)
    assert summed == pytest.approx(objective(student, whole).loss.item(), rel=1e-5)


def test_icl_inputs_never_hold_their_own_task(tokenizer):
    """12 tasks x 5 verified programs each, shuffled, micro-batches of 4, 2 shots: no input shows another
    answer to its own question (before: 53 of 60 did, with rows grouped by task)."""
    rows = [{"task_id": f"t{t}", "prompt_text": CHAT.format(f"Task {t}"), "target_text": f"return {t} + {p}"}
            for t in range(12) for p in range(5)]
    for order in (rows, random.Random(0).sample(rows, len(rows))):   # grouped (the vote's order) and shuffled
        for start in range(0, len(order), 4):
            chunk = order[start:start + 4]
            columns = {k: [r[k] for r in chunk] for k in chunk[0]}
            batch = make_batch(columns, tokenizer, 256, tokenizer.pad_token_id, {"icl"}, random.Random(start),
                               icl_shots=2)
            for i, row in enumerate(chunk):
                ids = batch["icl"]["input_ids"][i][batch["icl"]["attention_mask"][i].bool()]
                labels = batch["icl"]["labels"][i]
                text = tokenizer.decode(ids)
                assert text.count(row["prompt_text"]) == 1, text     # only its own final question
                assert tokenizer.decode(labels[labels != IGNORE_INDEX]) == row["target_text"] + tokenizer.eos_token


def test_token_level_objectives_need_a_teacher_with_the_students_tokenizer():
    from distill_ray.workflow import check_token_level

    check_token_level({"sft": 1.0, "icl": 0.5}, {}, "gemma3")            # sequence-level: any tokenizer
    check_token_level({"kd": 1.0}, {"smollm2": "dir"}, "smollm2")
    with pytest.raises(ValueError, match="tokenizer"):
        check_token_level({"sft": 1.0, "kd": 0.5}, {}, "gemma3")


@pytest.mark.slow
def test_a_student_with_another_tokenizer_is_told_apart(tokenizer, tmp_path):
    """Gemma-3's tokenizer is not SmolLM2's: a Gemma student shares no vocabulary with a SmolLM2 teacher."""
    from distill_ray.config import load_config
    from distill_ray.models import resolve_model
    from distill_ray.workflow import same_vocabulary_teachers

    cfg = load_config(None, ["teacher.model=smollm2"])
    assert same_vocabulary_teachers(cfg, resolve_model("smollm2")) == {"smollm2": resolve_model("smollm2")}
    assert same_vocabulary_teachers(cfg, resolve_model("gemma3")) == {}
