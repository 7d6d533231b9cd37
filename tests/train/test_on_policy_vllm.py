"""The on-policy student sampler served by vLLM (CPU build, in .venv-vllm, driven from a child process): it samples
what the hf sampler samples for the same weights, a weight push reloads the running engine (its output then equals the
hf sampler's after the same push, and a push back to the initial weights gives what the freshly started engine gave on
them), and a short on-policy run with ``sampler_engine: vllm`` completes with the pushes recorded.

A tiny random llama with SmolLM2's tokenizer (head size 64: vLLM's CPU attention supports 32 to 512, not the 16 of
``tiny_dirs``), in float32 in both engines so that greedy decodes can be compared token for token."""

from __future__ import annotations

import pytest
import torch

from distill_ray.teachers.vllm import vllm_python

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(vllm_python() is None,
                                 reason=".venv-vllm is absent: `bash scripts/setup_vllm.sh` builds it (~2.5 min)")]

# The last one is longer than vLLM's CPU KV block (128 tokens), so that its prefix is cached and could be reused.
QUESTIONS = ["Add 2 and 3.", "Write a Python function that reverses a list.",
             "Sum these numbers: " + ", ".join(str(i) for i in range(60))]


@pytest.fixture(scope="module")
def llama_dirs(tmp_path_factory):
    """A tiny student and teacher, the student with weights of unit-scale activations (a llama as initialised
    greedily repeats one token whatever its prompt), and its weights perturbed (as a training step would)."""
    from transformers import AutoModelForCausalLM

    from distill_ray.models import resolve_model
    from distill_ray.train import build_student_from_config

    root = tmp_path_factory.mktemp("vllm-sampler")
    student, teacher = [build_student_from_config(resolve_model("smollm2"), root / name, hidden_size=128,
                                                  num_layers=2, num_heads=2, num_kv_heads=1, seed=seed)
                        for name, seed in (("student", 0), ("teacher", 1))]
    model = AutoModelForCausalLM.from_pretrained(student)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / parameter.shape[1] ** 0.5)
        model.save_pretrained(student)
        initial = {name: tensor.clone() for name, tensor in model.state_dict().items()}
        for parameter in model.parameters():
            parameter.add_(0.3 * parameter.std() * torch.randn(parameter.shape, generator=generator))
    return {"student": student, "teacher": teacher, "initial": initial, "pushed": model.state_dict()}


def _greedy(sampler, prompts: list[str]) -> dict:
    return sampler.sample(prompts, 2, 0.0, 10, seed=0)


def test_vllm_sampler_samples_the_hf_model_and_takes_pushed_weights_in_place(llama_dirs, tokenizer):
    from distill_ray.onpolicy.actors import StudentSampler
    from distill_ray.onpolicy.trainer import SAMPLER_DEFAULTS

    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True) for q in QUESTIONS]
    hf = StudentSampler(str(llama_dirs["student"]), "hf")
    served = StudentSampler(str(llama_dirs["student"]), "vllm", SAMPLER_DEFAULTS["vllm"])
    try:
        fresh = _greedy(served, prompts)          # the freshly started engine on the initial weights
        assert fresh["token_ids"] == _greedy(hf, prompts)["token_ids"] and fresh["version"] == 0
        # The trainer's state_dict (lm_head.weight and the embedding it is tied to) into the running engine.
        pushed = llama_dirs["pushed"]
        assert "lm_head.weight" in pushed
        seconds = served.load_weights(pushed, version=3)
        hf.load_weights(pushed, version=3)
        after = _greedy(served, prompts)
        assert seconds > 0 and after["version"] == 3
        assert after["token_ids"] != fresh["token_ids"]
        assert after["token_ids"] == _greedy(hf, prompts)["token_ids"]      # both changed, the same way
        # Back to the initial weights: what the freshly started engine sampled on them. These prompts' prefixes
        # were cached with the pushed weights just before: a stale prefix cache would show here.
        served.load_weights(llama_dirs["initial"], version=4)
        assert _greedy(served, prompts)["token_ids"] == fresh["token_ids"]
        # A state_dict without the tied head (e.g. safetensors' deduplicated one) loads the same model.
        served.load_weights({k: v for k, v in pushed.items() if k != "lm_head.weight"}, version=5)
        again = _greedy(served, prompts)
        assert again["token_ids"] == after["token_ids"] and again["version"] == 5
    finally:
        served.engine.close()


def test_an_on_policy_run_samples_with_vllm_and_pushes_each_step(ray_cluster, llama_dirs, tokenizer, tmp_path):
    from distill_ray.config import OnPolicyConfig, PromptConfig
    from distill_ray.onpolicy import ScoringTeacher, train_on_policy
    from distill_ray.onpolicy.problems import on_policy_problems
    from distill_ray.prompts import exemplar_pool
    from distill_ray.tasks import load_problems
    from distill_ray.train import TrainSettings

    train, _ = load_problems("puzzles", num_train=8, num_eval=1, seed=0)
    problems = on_policy_problems(train[2:], exemplar_pool(train[:2]), tokenizer, [tokenizer],
                                  PromptConfig(num_shots=1), seed=0)
    # In turn (overlap: false): each step samples after the previous step's push, so a staleness of 0 at step 2
    # means the vLLM sampler reported the pushed version.
    op = OnPolicyConfig(steps=2, prompts_per_step=2, samples=2, max_new_tokens=8, top_k=5, sync_every=1,
                        overlap=False, sampler_engine="vllm")
    settings = TrainSettings(workers=1, lr=1e-3, max_length=256, log_every=0)
    result = train_on_policy(llama_dirs["student"], problems, [ScoringTeacher("t", str(llama_dirs["teacher"]))],
                             tmp_path / "student", settings, op)
    assert result.steps == 2 and result.samples == 2 * 2 * 2
    assert [h["staleness"] for h in result.history] == [0, 0]
    assert result.history[0]["sync_s"] > 0 and all(h["sample_s"] > 0 for h in result.history)
