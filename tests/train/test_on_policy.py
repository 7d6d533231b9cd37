"""On-policy distillation: the generalised JSD, the teacher mixture, the rollout batch, teacher scoring, weight
pushes to the samplers, and a short run on 2 Ray Train workers that lowers the reverse KL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distill_ray.onpolicy.rollouts import combine_teachers, rollout_batch, row_weights
from distill_ray.train import losses
from distill_ray.train.data import IGNORE_INDEX


def _kway(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.gather(-1, ids).double(), dim=-1)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_jsd_is_zero_when_the_student_is_the_teacher(beta):
    logits = torch.randn(6, 50)
    logprobs, ids = torch.log_softmax(logits, -1).topk(5, dim=-1)
    assert losses.jsd_topk(logits, ids, logprobs, beta).abs().max() < 1e-6


def test_jsd_matches_hand_computed_kls_and_its_ends_are_the_two_kls():
    student = torch.tensor([[1.0, 0.0, -1.0, 3.0]])        # id 3 is outside the teacher's top-k: ignored
    ids = torch.tensor([[0, 1, 2]])
    teacher_p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    logprobs = teacher_p.log().float()[None] - 0.7           # stored log-probs need not sum to 1: renormalised
    q = _kway(student, ids)[0]
    forward = float((teacher_p * (teacher_p / q).log()).sum())
    reverse = float((q * (q / teacher_p).log()).sum())
    m = 0.5 * teacher_p + 0.5 * q
    jsd = float(0.5 * (teacher_p * (teacher_p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum())
    assert losses.jsd_topk(student, ids, logprobs, 0.0).item() == pytest.approx(forward, rel=1e-5)
    assert losses.jsd_topk(student, ids, logprobs, 1.0).item() == pytest.approx(reverse, rel=1e-5)
    assert losses.jsd_topk(student, ids, logprobs, 0.5).item() == pytest.approx(jsd, rel=1e-5)
    assert losses.jsd_topk(student, ids, logprobs, 0.0).item() == pytest.approx(
        losses.kl_topk(student, ids, logprobs, 1.0).item(), rel=1e-5)   # forward KL is kd's k-way KL at T=1
    with pytest.raises(ValueError, match="beta"):
        losses.jsd_topk(student, ids, logprobs, 1.5)


def test_reverse_kl_gradient_moves_the_student_towards_the_teacher():
    student = torch.zeros(1, 4, requires_grad=True)
    ids = torch.tensor([[0, 1, 2, 3]])
    logprobs = torch.log(torch.tensor([[0.7, 0.1, 0.1, 0.1]]))
    losses.jsd_topk(student, ids, logprobs, 1.0).sum().backward()
    assert student.grad[0, 0] < 0 and (student.grad[0, 1:] > 0).all()   # descent raises the teacher's favourite


def test_missing_teacher_entries_are_left_out():
    student = torch.randn(2, 10)
    ids = torch.tensor([[1, 2, 3], [4, 5, 0]])
    logprobs = torch.tensor([[-0.5, -1.0, -2.0], [-0.2, -1.5, float("-inf")]])
    full = losses.jsd_topk(student, ids, logprobs, 1.0)
    alone = losses.jsd_topk(student[1:], ids[1:, :2], logprobs[1:, :2], 1.0)
    assert torch.isfinite(full).all() and full[1].item() == pytest.approx(alone.item(), rel=1e-5)


def test_one_teacher_is_its_own_distribution_and_two_mix_by_weight():
    ids_a = np.array([[3, 1]])
    lp_a = np.log(np.array([[0.6, 0.2]]))
    ids_b = np.array([[1, 7]])
    lp_b = np.log(np.array([[0.5, 0.5]]))
    one_ids, one_lp = combine_teachers([(ids_a, lp_a)], [1.0], 2)
    assert one_ids[0].tolist() == [3, 1] and np.exp(one_lp[0]).tolist() == pytest.approx([0.75, 0.25])
    ids, lp = combine_teachers([(ids_a, lp_a), (ids_b, lp_b)], [3.0, 1.0], 2)
    # mixture: 3 -> .75*.6 = .45, 1 -> .75*.2 + .25*.5 = .275, 7 -> .25*.5 = .125; renormalised over the union
    mass = {3: 0.45, 1: 0.275, 7: 0.125}
    total = sum(mass.values())
    assert ids[0, :3].tolist() == [3, 1, 7]
    assert np.exp(lp[0, :3]).tolist() == pytest.approx([mass[t] / total for t in (3, 1, 7)])
    assert lp[0, 3] == -np.inf


def test_verifier_modes_weigh_rejected_completions():
    passed = [True, False]
    assert row_weights(passed, "none", 0.1) == [1.0, 1.0]
    assert row_weights(passed, "weight", 0.1) == [1.0, 0.1]
    assert row_weights(passed, "filter", 0.1) == [1.0, 0.0]
    with pytest.raises(ValueError, match="verifier mode"):
        row_weights(passed, "reward", 0.1)


def test_rollout_batch_puts_each_teacher_distribution_on_the_token_it_scored():
    prompts = [[5, 6, 7], [8]]
    completions = [[11, 12], [13, 14, 15]]
    topk = [(np.array([[11, 1], [12, 2]]), np.log(np.array([[0.9, 0.1], [0.8, 0.2]]))),
            (np.array([[13, 1], [14, 2], [15, 3]]), np.log(np.array([[0.5, 0.5], [0.6, 0.4], [0.7, 0.3]])))]
    batch = rollout_batch(prompts, completions, topk, [1.0, 0.1], [True, False], max_length=16, pad_id=0)
    for row, completion in enumerate(completions):
        positions = (batch["labels"][row] != IGNORE_INDEX).nonzero().flatten()
        assert batch["labels"][row, positions].tolist() == completion
        assert batch["topk_mask"][row].nonzero().flatten().tolist() == positions.tolist()
        assert batch["topk_ids"][row, positions, 0].tolist() == completion   # each token's own distribution
    assert batch["row_weight"].tolist() == pytest.approx([1.0, 0.1]) and batch["verified"].tolist() == [True, False]
    cut = rollout_batch([[5, 6, 7, 8, 9]], [[11, 12]], topk[:1], [1.0], [True], max_length=4, pad_id=0)
    assert cut["input_ids"][0].tolist() == [8, 9, 11, 12]                # the prompt loses its start, not the target


def test_teacher_scores_are_the_logprobs_the_model_samples_from(tiny_dirs):
    """score() of a completion gives, at each position, the same top-k that generate() recorded while writing it."""
    from distill_ray.teachers import SamplingSettings
    from distill_ray.teachers.hf import HFEngine

    engine = HFEngine(str(tiny_dirs[1]))
    prompts = ["<|im_start|>user\nAdd 2 and 3<|im_end|>\n<|im_start|>assistant\n", "x = "]
    batch = engine.generate(prompts, SamplingSettings(n=2, temperature=1.0, max_new_tokens=6, seed=3, top_k_logprobs=4))
    generations = [g for row in batch for g in row]
    scores = engine.score([prompts[i // 2] for i in range(4)], [g.token_ids for g in generations], 4)
    for g, (ids, logprobs) in zip(generations, scores):
        assert ids.shape == (len(g.token_ids), 4)
        assert ids.tolist() == [[t for t, _ in step] for step in g.logprobs]
        np.testing.assert_allclose(logprobs, [[lp for _, lp in step] for step in g.logprobs], atol=1e-4)


def test_pushed_weights_reach_the_sampler(tiny_dirs):
    from transformers import AutoModelForCausalLM

    from distill_ray.onpolicy.actors import StudentSampler

    sampler = StudentSampler(str(tiny_dirs[0]))
    before = sampler.sample(["x = "], 2, 1.0, 8, seed=5)
    teacher = AutoModelForCausalLM.from_pretrained(tiny_dirs[1])
    sampler.load_weights(teacher.state_dict(), version=7)
    after = sampler.sample(["x = "], 2, 1.0, 8, seed=5)
    assert after["version"] == 7 and after["token_ids"] != before["token_ids"]
    assert sampler.sample(["x = "], 2, 1.0, 8, seed=5)["token_ids"] == after["token_ids"]   # seeded


def _mean_reverse_kl(student_dir, teacher_dir, prompts, completions, k=20) -> float:
    """Per-token reverse KL (k-way over the teacher's top-k) of a student on fixed completions."""
    from distill_ray.teachers.hf import HFEngine

    student, teacher = HFEngine(str(student_dir)), HFEngine(str(teacher_dir))
    scores = teacher.score(prompts, completions, k)
    total = tokens = 0.0
    for prompt, completion, (ids, logprobs) in zip(prompts, completions, scores):
        prompt_ids = student.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = student.model(torch.tensor([prompt_ids + completion])).logits[0, len(prompt_ids) - 1:-1]
        total += float(losses.jsd_topk(logits, torch.tensor(ids), torch.tensor(logprobs), 1.0).sum())
        tokens += len(completion)
    return total / tokens


@pytest.mark.slow
def test_a_short_on_policy_run_on_two_workers_lowers_the_reverse_kl(ray_cluster, tiny_dirs, tokenizer, tmp_path):
    from distill_ray.config import OnPolicyConfig, PromptConfig
    from distill_ray.onpolicy import ScoringTeacher, train_on_policy
    from distill_ray.onpolicy.actors import StudentSampler
    from distill_ray.onpolicy.problems import on_policy_problems
    from distill_ray.prompts import exemplar_pool
    from distill_ray.tasks import load_problems
    from distill_ray.train import TrainSettings

    student_dir, teacher_dir = tiny_dirs
    train, _ = load_problems("puzzles", num_train=16, num_eval=1, seed=0)
    problems = on_policy_problems(train[4:], exemplar_pool(train[:4]), tokenizer, [tokenizer],
                                  PromptConfig(num_shots=1), seed=0)
    # A fixed batch: the initial student's own completions of some problems.
    fixed = StudentSampler(str(student_dir)).sample([p["student_prompt"] for p in problems[:4]], 2, 1.0, 12, seed=1)
    fixed_prompts = [problems[i // 2]["teacher_prompts"][0] for i in range(8)]
    before = _mean_reverse_kl(student_dir, teacher_dir, fixed_prompts, fixed["token_ids"])

    op = OnPolicyConfig(steps=6, prompts_per_step=2, samples=2, max_new_tokens=12, top_k=20, sync_every=1,
                        verifier="weight")
    # A worker dies after step 3: the run restarts from the step-2 checkpoint and re-syncs the samplers.
    settings = TrainSettings(workers=2, lr=3e-3, zero_stage=2, max_length=256, log_every=0, checkpoint_every=2,
                             fail_at_step=3, max_failures=1)
    result = train_on_policy(student_dir, problems, [ScoringTeacher("t", str(teacher_dir))], tmp_path / "student",
                             settings, op)
    after = _mean_reverse_kl(tmp_path / "student", teacher_dir, fixed_prompts, fixed["token_ids"])
    print(f"reverse KL on the fixed batch: {before:.4f} -> {after:.4f}", [round(h["reverse_kl"], 3) for h in result.history])
    assert after < 0.8 * before, (before, after)
    assert result.resumed_from == [2] and result.steps == 6
    assert [h["step"] for h in result.history] == [1, 2, 3, 4, 5, 6]   # step 3 redone once, recorded once
    assert result.samples == 6 * 2 * 2 * 2                        # steps x workers x problems x samples
    assert result.history[2]["staleness"] == 0                    # the first step after the resume: re-synced
    assert result.history[0]["staleness"] == 0                    # the first step samples the initial weights
    assert all(h["staleness"] <= 1 for h in result.history)       # later ones one push behind at most
    assert all(h["sample_s"] > 0 and h["score_s"] > 0 and h["verify_s"] > 0 for h in result.history)
    assert 0.0 <= result.history[-1]["verified"] <= 1.0 and math.isfinite(result.history[-1]["reverse_kl"])


def test_a_teacher_with_another_tokenizer_is_refused_by_name(tiny_dirs):
    from distill_ray.models import resolve_model
    from distill_ray.onpolicy import ScoringTeacher
    from distill_ray.onpolicy.trainer import require_student_vocabulary

    require_student_vocabulary(tiny_dirs[0], [ScoringTeacher("same", str(tiny_dirs[1]))])
    with pytest.raises(ValueError, match="'gemma'.*another tokenizer"):
        require_student_vocabulary(tiny_dirs[0], [ScoringTeacher("gemma", str(resolve_model("gemma3")))])


def test_on_policy_arms_train_on_as_many_sequences_as_the_teacher_data_arms():
    from distill_ray.config import load_config
    from distill_ray.experiment import on_policy_config

    from tests.conftest import REPO

    cfg = load_config(REPO / "configs" / "on_policy.yaml")
    plain = on_policy_config(cfg, "on_policy", budget=50)
    per_step = cfg.train.workers * cfg.on_policy.prompts_per_step * cfg.on_policy.samples
    assert plain.train.mode == "on_policy" and plain.on_policy.verifier == "none" and plain.on_policy.sft_weight == 0
    assert plain.on_policy.steps == math.ceil(50 * cfg.train.epochs / per_step)
    verified = on_policy_config(cfg, "on_policy_verified", budget=50)
    assert verified.on_policy.verifier == "weight" and verified.on_policy.sft_weight == 1.0
    assert cfg.train.mode == "offline"                                # the run's own config is left alone
