"""MoE students (train.moe): upcycling a dense student into a Mixtral, the routers' load-balancing loss, the switch."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from distill_ray.config import MoeConfig, TrainConfig
from distill_ray.train.batch import make_batch
from distill_ray.train.moe import UPCYCLED_DIR, active_parameters, upcycle, upcycle_for_run
from distill_ray.train.objectives import ROUTER_AUX, DistillParams, Objective

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
ROWS = {"prompt_text": [CHAT.format(q) for q in ("Say red", "Pick a number", "x", "Add 2 and 3")],
        "target_text": ["red red", "Tom 42", "ok", "5"]}


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    """A tiny random 2-layer llama (two layers: the copy must land in every layer)."""
    from distill_ray.models import resolve_model
    from distill_ray.train import build_student_from_config

    return build_student_from_config(resolve_model("smollm2"), tmp_path_factory.mktemp("moe") / "dense",
                                     hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, seed=3)


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     position_ids=batch["position_ids"]).logits


@pytest.mark.parametrize("top_k", [1, 2])
def test_the_upcycled_student_is_a_mixtral_that_computes_the_dense_student(top_k, dense_dir, tokenizer, tmp_path):
    """Every expert a copy of its layer's MLP and top-k weights that sum to 1: whatever the (random) router picks,
    the MoE layer is the dense MLP, so the reloaded Mixtral's logits are the dense llama's."""
    moe_dir = upcycle(dense_dir, tmp_path / "moe", experts=4, top_k=top_k, seed=1)
    batch = make_batch(ROWS, tokenizer, 64, tokenizer.pad_token_id, set())
    dense, moe = _load(dense_dir), _load(moe_dir)
    assert type(moe).__name__ == "MixtralForCausalLM" and moe.config.num_experts_per_tok == top_k
    assert torch.allclose(_logits(moe, batch), _logits(dense, batch), atol=1e-5)
    # the router is not zero (tokens spread over the experts) and the experts are distinct tensors
    router = moe.model.layers[1].mlp.gate.weight
    assert router.abs().sum() > 0 and router.shape == (4, 32)
    config = moe.config
    mlp = 3 * config.hidden_size * config.intermediate_size
    routers = config.num_hidden_layers * 4 * config.hidden_size
    dense_params = sum(p.numel() for p in dense.parameters())
    assert active_parameters(moe) == dense_params + routers + config.num_hidden_layers * (top_k - 1) * mlp
    provenance = json.loads((moe_dir / "distill_student.json").read_text())
    assert provenance["kind"] == "upcycled" and provenance["active_parameters"] == active_parameters(moe)


def test_a_wrong_copy_breaks_the_equivalence(dense_dir, tokenizer, tmp_path):
    """The equivalence above is a real check: one expert's gate and up rows swapped changes the logits."""
    moe = _load(upcycle(dense_dir, tmp_path / "moe", experts=4, top_k=2, seed=1))
    batch = make_batch(ROWS, tokenizer, 64, tokenizer.pad_token_id, set())
    with torch.no_grad():
        gate_up = moe.model.layers[0].mlp.experts.gate_up_proj
        gate_up[0] = gate_up[0].roll(gate_up.shape[1] // 2, dims=0)
    assert not torch.allclose(_logits(moe, batch), _logits(_load(dense_dir), batch), atol=1e-3)


def _step(model, weight: float, tokenizer) -> tuple[dict, object]:
    """One AdamW step of sft (+ the router term at ``weight``); returns the weights before and the loss output."""
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    batch = make_batch(ROWS, tokenizer, 64, tokenizer.pad_token_id, set())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    out = Objective({"sft": 1.0}, DistillParams(router_aux_weight=weight))(model, batch)
    out.loss.backward()
    optimizer.step()
    return before, out


def _changed(model, before: dict, part: str) -> bool:
    return any(not torch.equal(p, before[name]) for name, p in model.named_parameters() if part in name)


def _router_grad(model) -> float:
    return max(float(p.grad.abs().max()) for name, p in model.named_parameters() if "mlp.gate." in name)


def test_the_load_balancing_loss_reaches_the_router(dense_dir, tokenizer, tmp_path):
    """With top-1, Mixtral's renormalised weight is 1 whatever the router says, so sft alone gives the router no
    gradient (rounding only); the router_aux term is what trains it, and it is in the loss: parts records it
    (positive), the loss grows by weight x it, and a step moves the router."""
    moe_dir = upcycle(dense_dir, tmp_path / "moe", experts=4, top_k=1, seed=1)
    plain = _load(moe_dir)
    before, out = _step(plain, 0.0, tokenizer)
    assert ROUTER_AUX not in out.parts and _router_grad(plain) < 1e-8
    assert _changed(plain, before, "mlp.experts.")
    balanced = _load(moe_dir)
    before, out_aux = _step(balanced, 0.5, tokenizer)
    assert out_aux.parts[ROUTER_AUX] > 0 and _router_grad(balanced) > 1e-4
    assert _changed(balanced, before, "mlp.gate.")
    assert out_aux.loss.item() == pytest.approx(out.loss.item() + 0.5 * out_aux.parts[ROUTER_AUX], rel=1e-5)


def test_a_trained_moe_student_reloads_with_its_logits(dense_dir, tokenizer, tmp_path):
    """After a step the experts differ; save_pretrained (Mixtral's per-expert w1/w2/w3 files) and transformers'
    AutoModelForCausalLM give back the same model."""
    model = _load(upcycle(dense_dir, tmp_path / "moe", experts=4, top_k=2, seed=1))
    _step(model, 0.01, tokenizer)
    experts = model.model.layers[0].mlp.experts.down_proj
    assert not torch.equal(experts[0], experts[1])
    model.save_pretrained(tmp_path / "trained")
    batch = make_batch(ROWS, tokenizer, 64, tokenizer.pad_token_id, set())
    assert torch.allclose(_logits(_load(tmp_path / "trained"), batch), _logits(model.eval(), batch), atol=1e-6)


def test_the_router_term_needs_an_moe_student(dense_dir, tokenizer):
    batch = make_batch(ROWS, tokenizer, 64, tokenizer.pad_token_id, set())
    with pytest.raises(ValueError, match="mixture-of-experts"):
        Objective({"sft": 1.0}, DistillParams(router_aux_weight=0.01))(_load(dense_dir), batch)


def test_only_a_llama_without_biases_is_upcycled():
    from transformers import GemmaConfig, LlamaConfig

    from distill_ray.train.moe import moe_config

    assert moe_config(LlamaConfig(), 4, 2, 0.01).num_local_experts == 4
    for dense in (GemmaConfig(), LlamaConfig(attention_bias=True), LlamaConfig(mlp_bias=True)):
        with pytest.raises(ValueError, match="llama student"):
            moe_config(dense, 4, 2, 0.01)


def test_moe_is_validated_at_the_edge():
    assert TrainConfig().moe.experts == 0 and MoeConfig(experts=4, top_k=4).top_k == 4
    for bad in ({"experts": 4, "top_k": 5}, {"experts": 1}, {"experts": 4, "aux_loss_weight": -1.0}):
        with pytest.raises(ValidationError):
            MoeConfig(**bad)
    with pytest.raises(ValidationError, match="on_policy"):
        TrainConfig(mode="on_policy", moe={"experts": 4})


def test_the_switch_sets_the_router_weight_and_upcycles_once(dense_dir, tmp_path):
    """train.moe gives the loop's objective its router weight; a run upcycles a dense start under its output and
    keeps an MoE start with the same experts (a later phase), refusing one with others."""
    from distill_ray.train import TrainSettings
    from distill_ray.train.loop import _build_objective

    settings = TrainSettings(moe={"experts": 4, "top_k": 2, "aux_loss_weight": 0.02})
    assert _build_objective(settings, None).params.router_aux_weight == 0.02
    assert _build_objective(TrainSettings(), None).params.router_aux_weight == 0.0
    start = upcycle_for_run(dense_dir, tmp_path, settings.moe, seed=0)
    assert start == tmp_path / UPCYCLED_DIR and _load(start).config.num_local_experts == 4
    assert upcycle_for_run(start, tmp_path / "later", settings.moe, seed=0) == start
    with pytest.raises(ValueError, match="4 experts"):
        upcycle_for_run(start, tmp_path / "other", MoeConfig(experts=8, top_k=2), seed=0)


@pytest.mark.slow
def test_training_with_the_switch_exports_a_trained_mixtral(ray_cluster, dense_dir, tokenizer, tmp_path):
    """train_student with train.moe (DeepSpeed ZeRO-2, the default) upcycles the dense student, trains routers and
    experts, exports a Mixtral and removes the upcycled start."""
    import ray.data

    from distill_ray.train import TrainSettings, train_student

    rows = [{"prompt_text": p, "target_text": t} for p, t in zip(ROWS["prompt_text"], ROWS["target_text"])] * 2
    settings = TrainSettings(workers=1, batch_size=4, lr=1e-2, max_steps=2, epochs=5, log_every=0, max_length=64,
                             tensorboard=False, moe={"experts": 4, "top_k": 1, "aux_loss_weight": 0.1})
    result = train_student(dense_dir, ray.data.from_items(rows), tmp_path / "out", settings)
    assert result.steps == 2 and not (tmp_path / "out" / UPCYCLED_DIR).exists()
    trained = _load(tmp_path / "out")
    start = _load(upcycle(dense_dir, tmp_path / "start", experts=4, top_k=1, aux_loss_weight=0.1, seed=0))
    router = "model.layers.0.mlp.gate.weight"
    assert type(trained).__name__ == "MixtralForCausalLM"
    assert not torch.equal(trained.state_dict()[router], start.state_dict()[router])
    assert json.loads((tmp_path / "out" / "distill_student.json").read_text())["kind"] == "upcycled"
