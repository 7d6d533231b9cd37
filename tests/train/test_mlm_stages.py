"""PanGu-Coder's two-stage objective: span infilling (``mlm``) for a decoder, and ``train.stages``."""

from __future__ import annotations

import random

import pytest
import torch

from distill_ray.config import StageConfig, TrainConfig
from distill_ray.train.batch import make_batch
from distill_ray.train.data import IGNORE_INDEX
from distill_ray.train.infill import FILL_TEXT, MASK_TEXT, infill_example, infill_rows, span_bounds
from distill_ray.train.objectives import Objective

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
MASK, FILL, EOS = [900, 901], [902], 999


def test_the_span_moves_behind_the_sequence_and_only_it_is_labelled():
    """Hand-computed: prompt [1, 2], target [10..15], span [2, 4) = [12, 13]."""
    example = infill_example([1, 2], [10, 11, 12, 13, 14, 15], (2, 4), MASK, FILL, EOS, max_length=64)
    assert example.input_ids == [1, 2, 10, 11, 900, 901, 14, 15, 902, 12, 13, 999]
    assert example.num_prompt == 9   # prompt, prefix, mask, suffix and fill marker: context, no loss
    assert example.input_ids[example.num_prompt:] == [12, 13, EOS]


@pytest.mark.parametrize("fraction", [0.1, 0.3, 1.0])
def test_spans_hide_their_tokens_and_are_seeded(fraction):
    for length in range(0, 40):
        a, b = span_bounds(length, fraction, random.Random(length))
        assert (a, b) == span_bounds(length, fraction, random.Random(length))   # the same seed, the same span
        assert 0 <= a <= b <= length and (b - a == min(length, max(1, round(fraction * length))) or length == 0)
        target = list(range(100, 100 + length))
        example = infill_example([1], target, (a, b), MASK, FILL, EOS, max_length=128)
        context, labelled = example.input_ids[:example.num_prompt], example.input_ids[example.num_prompt:]
        assert labelled == target[a:b] + [EOS]
        assert not set(target[a:b]) & set(context)   # the span is hidden from the input it is predicted from
        assert context == [1, *target[:a], *MASK, *target[b:], *FILL]


def test_infill_batch_labels_the_span_and_eos_only(tokenizer):
    prompts = [CHAT.format("Write f"), CHAT.format("Write g")]
    targets = ["def f(x):\n    return x + 1\n", "def g(s):\n    return s[::-1]\n"]
    rows = {"prompt_text": prompts, "target_text": targets}
    batch = make_batch(rows, tokenizer, 128, tokenizer.pad_token_id, {"mlm"}, random.Random(3), mlm_span=0.5)
    again = make_batch(rows, tokenizer, 128, tokenizer.pad_token_id, {"mlm"}, random.Random(3), mlm_span=0.5)
    assert torch.equal(batch["mlm"]["input_ids"], again["mlm"]["input_ids"])   # seeded by the batch's rng
    for i, target in enumerate(targets):
        ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        labels = batch["mlm"]["labels"][i]
        span = labels[labels != IGNORE_INDEX].tolist()
        assert span[-1] == tokenizer.eos_token_id and len(span) - 1 == round(0.5 * len(ids))
        text = tokenizer.decode(batch["mlm"]["input_ids"][i][batch["mlm"]["attention_mask"][i].bool()])
        before, after = text.split(FILL_TEXT)
        assert before.count(MASK_TEXT) == 1 and after == tokenizer.decode(span)
        assert before.replace(MASK_TEXT, tokenizer.decode(span[:-1])) == prompts[i] + target   # nothing else moved
    # The plain batch is untouched by mlm: sft reads the same rows as without it.
    plain = make_batch(rows, tokenizer, 128, tokenizer.pad_token_id, set())
    assert torch.equal(batch["labels"], plain["labels"]) and torch.equal(batch["input_ids"], plain["input_ids"])


def test_mlm_is_the_span_tokens_cross_entropy_per_token(tiny_dirs, tokenizer):
    """The mlm term = the summed NLL of each row's span (+ EOS), computed row by row without padding; alone it
    is normalised by its span tokens, mixed with sft by sft's target tokens (the loop's convention)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_dirs[0])).eval()
    rows = {"prompt_text": [CHAT.format("a"), CHAT.format("bb")], "target_text": ["x = 1 + 2", "print('hello world')"]}
    batch = make_batch(rows, tokenizer, 64, tokenizer.pad_token_id, {"mlm"}, random.Random(0), mlm_span=0.4)
    examples = infill_rows(tokenizer, rows["prompt_text"], rows["target_text"], 64, random.Random(0), 0.4)
    with torch.no_grad():
        total, spans = 0.0, 0
        for e in examples:
            logits = model(torch.tensor([e.input_ids])).logits[0, e.num_prompt - 1:-1]
            total += torch.nn.functional.cross_entropy(logits, torch.tensor(e.input_ids[e.num_prompt:]),
                                                       reduction="sum").item()
            spans += e.num_target
        alone = Objective({"mlm": 1.0})(model, batch)
        sft = Objective({"sft": 1.0})(model, batch)
        both = Objective({"sft": 1.0, "mlm": 0.5})(model, batch)
    assert alone.tokens == spans and alone.loss.item() == pytest.approx(total / spans, rel=1e-4)
    assert both.tokens == sft.tokens
    assert both.loss.item() == pytest.approx((sft.loss.item() * sft.tokens + 0.5 * total) / sft.tokens, rel=1e-4)


def test_stages_are_validated_at_the_edge():
    with pytest.raises(ValueError, match="objectives"):
        StageConfig(objectives={"mlm_typo": 1.0})
    with pytest.raises(ValueError, match="one > 0"):
        StageConfig(objectives={})
    with pytest.raises(ValueError, match="one > 0"):
        StageConfig(objectives={"sft": 0.0})
    with pytest.raises(ValueError, match="max_steps"):
        StageConfig(data="raw_code", objectives={"sft": 1.0})
    with pytest.raises(ValueError, match="data"):
        StageConfig(data="wikipedia", objectives={"sft": 1.0})
    with pytest.raises(ValueError):
        TrainConfig(stages=[{"objectives": {"sft": 1.0}, "steps": 3}])   # a misspelt key is an error
    assert TrainConfig().stages == []


def test_a_stage_trains_on_what_it_names():
    from distill_ray.train import TrainSettings
    from distill_ray.train.staged import stage_data, stage_settings

    settings = TrainSettings(workers=2, batch_size=3, lr=1e-4, objectives={"kd": 1.0}, stages=[
        {"data": "raw_code", "objectives": {"sft": 1.0}, "max_steps": 2, "lr": 1e-3},
        {"objectives": {"sft": 1.0, "mlm": 0.5}, "epochs": 2}])
    first, second = (stage_settings(settings, s) for s in settings.stages)
    assert (first.objectives, first.max_steps, first.lr, first.stages) == ({"sft": 1.0}, 2, 1e-3, [])
    assert (second.objectives, second.epochs, second.max_steps, second.lr) == ({"sft": 1.0, "mlm": 0.5}, 2, None, 1e-4)
    dataset = object()
    assert stage_data(settings.stages[1], dataset, settings) is dataset


def _rows(repeat: int = 2) -> list[dict]:
    words = ["red", "green", "blue", "cat"]
    return [{"prompt_text": CHAT.format(f"Say {w}"), "target_text": f"{w} {w} {w}"} for w in words * repeat]


@pytest.mark.slow
def test_stages_run_in_order_and_one_stage_is_a_plain_run(ray_cluster, tiny_dirs, tmp_path):
    """Two phases (causal LM on raw code, then sft + mlm on the rows) run in order, each from the student the one
    before wrote, each with its own steps and losses; a single phase that repeats the run's settings trains
    exactly as the same run without stages (the same losses): stages change nothing they do not name."""
    import json

    import ray.data

    from distill_ray.train import TrainSettings, train_student

    common = dict(workers=1, zero_stage=0, batch_size=4, lr=1e-3, log_every=0, max_length=64, tensorboard=False)
    staged = train_student(tiny_dirs[0], ray.data.from_items(_rows()), tmp_path / "staged", TrainSettings(
        **common, stages=[{"name": "code", "data": "raw_code", "objectives": {"sft": 1.0}, "max_steps": 3,
                           "lr": 5e-3},
                          {"name": "pairs", "objectives": {"sft": 1.0, "mlm": 1.0}, "epochs": 2}]))
    assert [s["name"] for s in staged.stages] == ["code", "pairs"]
    assert [s["steps"] for s in staged.stages] == [3, 4] and staged.steps == 7
    code, pairs = (s["loss_history"] for s in staged.stages)
    assert staged.loss_history == code + pairs
    # Raw code is far from the rows' words: the second phase's first loss is not the first phase's last one.
    assert code[-1] != pytest.approx(pairs[0], rel=0.05)
    assert staged.stages[1]["tokens"] > 0 and not (tmp_path / "staged" / "stages").exists()
    assert json.loads((tmp_path / "staged" / "train_result.json").read_text())["result"]["stages"][0]["name"] == "code"

    plain = train_student(tiny_dirs[0], ray.data.from_items(_rows()), tmp_path / "plain",
                          TrainSettings(**common, objectives={"sft": 1.0, "mlm": 1.0}, epochs=2))
    one = train_student(tiny_dirs[0], ray.data.from_items(_rows()), tmp_path / "one", TrainSettings(
        **common, stages=[{"objectives": {"sft": 1.0, "mlm": 1.0}, "epochs": 2}]))
    assert plain.stages == [] and plain.steps == one.steps == 4
    assert one.loss_history == pytest.approx(plain.loss_history, rel=1e-6)
    # The pairs phase started from the code phase's student, not from the initial one: its first loss differs
    # (from the same weights it would be the plain run's first loss to ~1e-6, as the one-phase run shows).
    assert abs(pairs[0] - plain.loss_history[0]) > 1e-3, (pairs, plain.loss_history)
