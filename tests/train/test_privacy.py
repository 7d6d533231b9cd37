"""swing's privacy scorers (regex, list, likelihood) and the canary experiment's utility report."""

from __future__ import annotations

import math
import time

import pytest
import torch

from distill_ray.train.batch import make_batch
from distill_ray.train.data import IGNORE_INDEX
from distill_ray.train.privacy import (char_scores, likelihood_scores, list_scorer, stored_target_logprobs,
                                       text_scorer, token_scores)

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tiny(tokenizer, tmp_path_factory):
    """A tiny random llama with the real SmolLM2 tokenizer."""
    from transformers import AutoModelForCausalLM

    from distill_ray.models import resolve_model
    from distill_ray.train import build_student_from_config

    path = build_student_from_config(resolve_model("smollm2"), tmp_path_factory.mktemp("tiny") / "m", hidden_size=32,
                                     num_layers=1, num_heads=2, num_kv_heads=1, seed=0)
    return AutoModelForCausalLM.from_pretrained(path).eval()


def scored(tokenizer, text: str, **kwargs) -> list[tuple[str, float]]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(zip((tokenizer.decode([i]) for i in ids), token_scores(tokenizer, ids, **kwargs)))


@pytest.mark.parametrize("answer", ['return 19 - 7', 'return "abc"[::-1]', 'True', '2', 'None',
                                    'def solution():\n    apples = 23\n    return apples * 4 - 7\n',
                                    'return [x for x in range(10) if x % 3 == 0]', 'return 3.14159 * 2'])
def test_default_scorer_leaves_task_answers_alone(tokenizer, answer):
    assert all(score == 0.0 for _, score in scored(tokenizer, answer)), scored(tokenizer, answer)


def test_default_scorer_flags_pins_phone_numbers_and_emails(tokenizer):
    tokens = scored(tokenizer, "The PIN of Alice is 4821, mail a.b@corp.io")
    assert "".join(piece for piece, score in tokens if score == 1.0) == "4821 a.b@corp.io"
    assert {score for _, score in tokens} == {0.0, 1.0}
    text = "call 555-123-4567 or 555 0199; 1.5 and 12 - 34 are not"
    scores = char_scores(text)
    assert all(scores[text.index(s)] == 1.0 for s in ("555-123", "4567", "0199"))
    assert scores[text.index("1.5")] == scores[text.index("12 - 34")] == 0.0
    # User patterns add to the built-ins.
    assert char_scores("code XK9", patterns=[r"XK\d"])[5] == 1.0


def test_list_scorer_flags_exactly_the_declared_terms(tokenizer):
    text = "Ask Alice Smith about XK-9, not Alice, Smithers or XK-90"
    tokens = scored(tokenizer, text, scorer=list_scorer(["Alice Smith", "XK-9"]))
    flagged = "".join(piece for piece, score in tokens if score == 1.0)
    assert flagged == " Alice Smith XK-9"          # several tokens each; the lone "Alice", "Smithers" and XK-90 not
    assert {score for _, score in tokens} == {0.0, 1.0}
    with pytest.raises(ValueError, match="does not score text"):
        text_scorer("likelihood")


def test_likelihood_scorer_flags_a_token_far_likelier_than_its_row():
    logprobs = torch.tensor([[-5.0, -4.0, -0.01, -5.0, -4.5],    # token 2: ~e^4.5 x the row's median
                             [-2.0, -2.0, -2.0, -2.0, -2.0],     # uniform: nothing stands out
                             [-0.01, -0.02, -0.01, -0.03, -0.01],  # memorised throughout: nothing stands out
                             [-7.0, -6.0, -3.0, 0.0, 0.0]])      # 3 nats over the median: half; padding: none
    mask = torch.tensor([[True] * 5, [True] * 5, [True] * 5, [True, True, True, False, False]])
    scores = likelihood_scores(logprobs, mask)
    assert scores[0].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert scores[1:3].abs().max() == 0.0
    assert scores[3].tolist() == pytest.approx([0.0, 0.0, 0.5, 0.0, 0.0])
    # NaN (no teacher logprob for that token) is left unscored and out of the median.
    scores = likelihood_scores(torch.tensor([[-6.0, -6.0, -1.0, float("nan")]]), torch.ones(1, 4, dtype=torch.bool))
    assert scores.tolist() == [[0.0, 0.0, 1.0, 0.0]]


def test_stored_topk_gives_the_labels_logprob_or_its_upper_bound():
    ids = torch.tensor([[7, 8, 9], [7, 8, 0]])
    logprobs = torch.tensor([[-0.1, -2.0, -3.0], [-0.5, -1.0, float("-inf")]])
    assert stored_target_logprobs(ids, logprobs, torch.tensor([8, 5])).tolist() == [-2.0, -1.0]


def test_swing_scores_likelihood_from_stored_topk_and_from_the_teacher(tokenizer, tiny):
    from distill_ray.train.objectives import DistillParams, Objective, forward

    targets = ["a b c d e", "return 19 - 7"]
    rows = {"prompt_text": [CHAT.format("x"), CHAT.format("y")], "target_text": targets}
    n = len(tokenizer(targets[0], add_special_tokens=False)["input_ids"]) + 1   # + EOS
    label_ids = tokenizer(targets[0], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    # Row 0 stores top-k: its third token is the teacher's near-certain pick, the others are not.
    rows["teacher_topk"] = [[[[t, -0.01 if j == 2 else -5.0], [t + 1, -6.0]] for j, t in enumerate(label_ids)], None]
    batch = make_batch(rows, tokenizer, 64, tokenizer.pad_token_id, {"topk", "privacy"}, privacy_scorer="likelihood")
    assert "privacy" not in batch                       # the objective scores it
    objective = Objective({"swing": 1.0}, DistillParams(swing_noise=0.0), teacher=tiny)
    fwd = forward(tiny, batch)
    logprobs = objective._target_logprobs(batch, fwd)
    assert logprobs[0, -n:].tolist() == pytest.approx([-0.01 if j == 2 else -5.0 for j in range(n)])
    # Row 1 has no stored top-k: the teacher model's log-probability of each label.
    teacher = torch.log_softmax(fwd.logits[1], dim=-1)   # the tiny model is its own teacher here
    labels = fwd.labels[1]
    on = labels != IGNORE_INDEX
    assert logprobs[1][on].tolist() == pytest.approx(teacher[on].gather(-1, labels[on, None]).squeeze(-1).tolist(),
                                                     abs=1e-5)
    assert likelihood_scores(logprobs, fwd.mask)[0, -n:].tolist() == [1.0 if j == 2 else 0.0 for j in range(n)]
    assert math.isfinite(objective(tiny, batch).loss.item())


def test_config_takes_the_scorer_and_list_needs_terms():
    from distill_ray.config import TrainConfig

    assert TrainConfig(privacy_scorer="list", privacy_terms=["Alice"]).privacy_terms == ["Alice"]
    assert TrainConfig().privacy_scorer == "regex"
    with pytest.raises(ValueError, match="privacy_terms"):
        TrainConfig(privacy_scorer="list")


@pytest.mark.slow
def test_compare_exposure_reports_utility_beside_exposure(tmp_path):
    from distill_ray.models import resolve_model
    from distill_ray.train.canary import compare_exposure, report

    started = time.perf_counter()
    result = compare_exposure(resolve_model("smollm2"), tmp_path, canaries=1, digits=2, repeats=2, teacher_steps=3,
                              student_steps=2, hidden=16, layers=1, scorers=("regex", "likelihood"))
    names = ["teacher", "untrained", "kd", "swing", "swing-likelihood"]
    assert list(result["utility"]) == names
    for name in names:
        utility = result["utility"][name]
        assert 0 < utility["train_nll"] < 20 and 0 < utility["heldout_nll"] < 20
        assert 0 <= result[name] <= result["max"]
    assert all(name in report(result) for name in names)
    print(f"compare_exposure: {time.perf_counter() - started:.1f} s")
