"""KNIFE: the bottleneck mask of the teacher's rows, the alignment of the student's tokens with the teacher's, the
loss, and the knife / knife_teacher terms through make_batch."""

from __future__ import annotations

import pytest
import torch

from distill_ray.train import knife, losses
from distill_ray.train.batch import make_batch
from distill_ray.train.data import IGNORE_INDEX
from distill_ray.train.objectives import Objective

ROWS = {"prompt_text": ["def sat(x: int) -> bool:\n    return x + 2 == 28\n# x =", "def f():\n    return 'ab' * 2\n# x ="],
        "target_text": [" 26", " 'abab'"],
        "rationale_text": ["def sol():\n    return 28 - 2\n", "'ab' * 2\n"]}


def _batch(tokenizer, rows=ROWS):
    return make_batch(rows, tokenizer, 64, tokenizer.pad_token_id, {"knife"})


@pytest.fixture(scope="module")
def two_layers(tokenizer, tmp_path_factory):
    """A tiny random llama of 2 layers: the rationale reaches the input tokens' states in layer 1 and the target
    reads those in layer 2."""
    from distill_ray.models import resolve_model
    from distill_ray.train import build_student_from_config

    return build_student_from_config(resolve_model("smollm2"), tmp_path_factory.mktemp("knife") / "m", hidden_size=32,
                                     num_layers=2, num_heads=2, num_kv_heads=1, seed=3)


def test_hidden_mse_is_zero_for_equal_states_and_matches_a_hand_computed_case():
    states = torch.randn(4, 3)
    assert losses.hidden_mse(states, states.clone()).abs().max().item() == 0.0
    student, teacher = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [3.0, -1.0]])
    assert losses.hidden_mse(student, teacher).tolist() == pytest.approx([2.0, 5.0])   # (0 + 4) / 2, (9 + 1) / 2


def test_alignment_matches_each_student_token_with_the_same_token_of_the_teacher_left_padding_included():
    # student rows: [pad, a, b] and [c, d, e]; teacher rows: [pad, r, a, b] and [r, c, d, e] (width 4)
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    student = torch.tensor([[[9.0], [1.0], [2.0]], [[3.0], [4.0], [5.0]]])
    teacher = torch.tensor([[[7.0], [7.0], [1.0], [2.0]], [[7.0], [3.0], [4.0], [6.0]]])
    # aligned pairs: (1, 1), (2, 2), (3, 3), (4, 4), (5, 6); the padding (9) and the rationale (7) are not compared
    assert knife.alignment([student], [teacher], mask, [-1]).item() == pytest.approx(1 / 5)
    assert knife.alignment([student, student], [teacher, teacher], mask, [0, 1]).item() == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="out of range"):
        knife.alignment([student], [teacher], mask, [2])
    with pytest.raises(ValueError, match="equal width"):
        knife.alignment([student], [teacher.expand(-1, -1, 2)], mask, [-1])


def test_the_teacher_rows_are_the_rationale_before_the_students_own_tokens(tokenizer):
    rows = {**ROWS, "rationale_text": ["r = 1", "a much longer rationale, longer than the first one"]}
    batch = _batch(tokenizer, rows)
    teacher, width = batch["knife"], batch["input_ids"].shape[1]
    assert teacher["input_ids"].shape[1] > width
    for i, rationale in enumerate(rows["rationale_text"]):
        real = batch["attention_mask"][i].bool()
        tail = {k: teacher[k][i, -width:][real] for k in ("input_ids", "labels")}
        assert tail["input_ids"].tolist() == batch["input_ids"][i][real].tolist()   # same tokens, same places
        assert tail["labels"].tolist() == batch["labels"][i][real].tolist()
        marked = teacher["input_ids"][i][teacher["rationale"][i]].tolist()
        assert marked == tokenizer(rationale, add_special_tokens=False)["input_ids"]
        before = teacher["attention_mask"][i].bool() & ~teacher["rationale"][i]
        assert int(before.sum()) == int(real.sum())     # rationale + the student's row: nothing else
    with pytest.raises(ValueError, match="rationale_text"):
        make_batch({k: ROWS[k] for k in ("prompt_text", "target_text")}, tokenizer, 64, tokenizer.pad_token_id,
                   {"knife"})


def _input_positions(batch) -> torch.Tensor:
    """[B, W]: the input tokens of teacher rows (real, neither rationale nor target)."""
    return batch["attention_mask"].bool() & ~batch["rationale"] & (batch["labels"] == IGNORE_INDEX)


def _answer_logits(model, batch, input_positions, held: list | None = None, record: list | None = None):
    """Logits predicting the target tokens; ``record`` collects every layer's output, ``held`` replaces the input
    tokens' states in every layer's output."""
    def hook(layer):
        def replace(module, args, output):
            states = output[0] if isinstance(output, tuple) else output
            if record is not None:
                record.append(states.detach().clone())
            if held is not None:
                states = torch.where(input_positions[..., None], held[layer], states)
            return (states, *output[1:]) if isinstance(output, tuple) else states
        return replace

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(model.model.layers)]
    try:
        from distill_ray.train.objectives import forward

        return forward(model, batch).logits
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_the_target_reads_the_rationale_only_through_the_input_tokens_states(attn, tokenizer, two_layers):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(two_layers, attn_implementation=attn).eval()
    first, second = ({**ROWS, "rationale_text": [r, r]} for r in (" 1 + 2 = 3", " 7 + 5 = 9"))
    a, b = (_batch(tokenizer, rows)["knife"] for rows in (first, second))
    inputs = _input_positions(a)
    assert torch.equal(inputs, _input_positions(b)) and not torch.equal(a["input_ids"], b["input_ids"])
    causal_a, causal_b = ({k: v for k, v in x.items() if k != "rationale"} for x in (a, b))
    with torch.no_grad():
        states: list = []
        logits_a = _answer_logits(model, a, inputs, record=states)
        logits_b = _answer_logits(model, b, inputs)
        held_b = _answer_logits(model, b, inputs, held=states)
        # A plain causal mask (no bottleneck): the target attends to the rationale directly.
        leaky: list = []
        leaky_a = _answer_logits(model, causal_a, inputs, record=leaky)
        leaky_b = _answer_logits(model, causal_b, inputs, held=leaky)
    assert (logits_a - logits_b).abs().max() > 1e-3        # the rationale does reach the target ...
    assert torch.allclose(held_b, logits_a, atol=1e-5)      # ... only through the input tokens' states
    assert (leaky_b - leaky_a).abs().max() > 1e-3           # without the bottleneck it leaks around them


def test_knife_is_zero_for_the_teacher_itself_without_a_rationale_and_knife_teacher_is_sft_there(tokenizer, tiny_dirs):
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(tiny_dirs[0])
    batch = _batch(tokenizer, {**ROWS, "rationale_text": ["", ""]})
    assert Objective({"knife": 1.0}, teacher=student)(student, batch).loss.item() < 1e-10
    sft = Objective({"sft": 1.0})(student, batch)
    teacher_sft = Objective({"knife_teacher": 1.0})(student, batch)
    assert teacher_sft.loss.item() == pytest.approx(sft.loss.item(), rel=1e-5) and teacher_sft.tokens == sft.tokens
    assert Objective({"knife": 1.0}, teacher=student)(student, _batch(tokenizer)).loss.item() > 1e-6
    with pytest.raises(ValueError, match="KNIFE teacher"):
        Objective({"knife": 1.0})(student, batch)


def test_knife_trains_the_student_toward_the_teacher_through_make_batch(tokenizer, tiny_dirs):
    from transformers import AutoModelForCausalLM

    student, teacher = (AutoModelForCausalLM.from_pretrained(d) for d in tiny_dirs)
    batch = _batch(tokenizer)
    objective = Objective({"sft": 1.0, "knife": 1.0}, teacher=teacher)
    assert objective.needs == {"knife"}
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    parts = []
    for _ in range(6):
        out = objective(student, batch)
        parts.append(out.parts["knife"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert parts[-1] < 0.5 * parts[0]
    assert all(p.grad is None for p in teacher.parameters())


def test_knife_without_its_teacher_or_in_the_pipeline_is_a_config_error():
    from distill_ray.config import RunConfig
    from distill_ray.train.config import TrainSettings

    with pytest.raises(ValueError, match="teacher_dir"):
        TrainSettings(objectives={"sft": 1.0, "knife": 1.0})
    with pytest.raises(ValueError, match="teacher_dir"):
        TrainSettings(stages=[{"objectives": {"knife": 1.0}}])
    assert TrainSettings(objectives={"knife": 1.0}, teacher_dir="t", knife_layers=[-1, 2]).knife_layers == [-1, 2]
    TrainSettings(objectives={"knife_teacher": 1.0})   # the teacher's own training needs no teacher
    with pytest.raises(ValueError, match="rationale_text"):
        RunConfig(train={"objectives": {"sft": 1.0, "knife_teacher": 1.0}})
    with pytest.raises(ValueError):
        TrainSettings(knife_layers=[])
