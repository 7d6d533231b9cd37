"""Sparse + quantized students (train.compress): magnitude pruning on a cubic schedule, int8 QAT, int8 export."""

from __future__ import annotations

import json

import pytest
import torch

from distill_ray.config import CompressConfig, TrainConfig
from distill_ray.train.compress import (Compressor, compressible_linears, cubic_sparsity, fake_quant,
                                        magnitude_mask, model_sparsity, quantize_rows, set_qat)
from distill_ray.train.int8 import MANIFEST, WEIGHTS, Int8Linear, directory_mb, export_int8, load_int8


@pytest.fixture()
def tiny_model(tiny_dirs):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_dirs[0]), dtype=torch.float32)


def _pruned_count(linears, sparsity: float) -> int:
    return sum(round(sparsity * m.weight.numel()) for m in linears.values())


def test_the_magnitude_mask_prunes_the_smallest_weights():
    weight = torch.tensor([[0.5, -0.1, 0.3], [-0.7, 0.05, 0.2]])
    # Half of 6 = 3 pruned: |0.05|, |-0.1|, |0.2| (whatever their row or sign).
    assert magnitude_mask(weight, 0.5).tolist() == [[True, False, True], [True, False, False]]
    assert magnitude_mask(weight, 0.0).all() and not magnitude_mask(weight, 1.0).any()
    # A pruned weight is zero, so the next, higher sparsity keeps it pruned: masks only grow.
    pruned = weight * magnitude_mask(weight, 0.5)
    assert magnitude_mask(pruned, 4 / 6).tolist() == [[True, False, False], [True, False, False]]


def test_the_cubic_schedule_rises_fast_then_slowly_to_exactly_the_target():
    assert cubic_sparsity(0, 0.5, 8) == 0.0
    assert cubic_sparsity(4, 0.5, 8) == pytest.approx(0.5 * (1 - 0.5 ** 3))   # 7/8 of the way at half time
    assert cubic_sparsity(8, 0.5, 8) == cubic_sparsity(20, 0.5, 8) == 0.5
    steps = [cubic_sparsity(s, 0.5, 8) for s in range(9)]
    gains = [b - a for a, b in zip(steps, steps[1:])]
    assert all(g > 0 for g in gains) and gains == sorted(gains, reverse=True)


def test_pruning_reaches_the_target_and_optimizer_steps_do_not_revive_it(tiny_model):
    """An AdamW loop over the tiny model with the compressor synced after every step, as the training loop does:
    each step's sparsity is the schedule's, exactly the target from the end of the ramp on; momentum does move
    pruned weights off zero (which is why the masks are re-applied), but never past a sync."""
    linears = compressible_linears(tiny_model)
    assert linears and all(".layers." in name for name in linears)   # decoder projections; not lm_head
    total = sum(m.weight.numel() for m in linears.values())
    compressor = Compressor(CompressConfig(sparsity=0.5, prune_steps=4), tiny_model, total_steps=7)
    compressor.sync(0)
    assert model_sparsity(linears) == 0.0
    optimizer = torch.optim.AdamW(tiny_model.parameters(), lr=1e-2)
    ids = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    revived = False
    for step in range(1, 8):
        tiny_model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        revived |= step > 1 and model_sparsity(linears) < cubic_sparsity(step - 1, 0.5, 4)
        compressor.sync(step)
        assert model_sparsity(linears) == _pruned_count(linears, cubic_sparsity(step, 0.5, 4)) / total
    assert revived, "AdamW's momentum should move pruned weights: the test would not see a missing re-apply"
    assert model_sparsity(linears) == _pruned_count(linears, 0.5) / total == pytest.approx(0.5, abs=1e-3)
    # A resumed run recovers the same masks from the checkpointed weights' zeros.
    resumed = Compressor(CompressConfig(sparsity=0.5, prune_steps=4), tiny_model, total_steps=7)
    resumed.sync(7)
    assert all(torch.equal(resumed.masks[k], compressor.masks[k]) for k in compressor.masks)


def test_fake_quant_rounds_to_the_int8_grid_and_passes_gradients_straight_through():
    t = torch.randn(6, 40, generator=torch.Generator().manual_seed(1)) * torch.arange(1, 7)[:, None]
    t[0, :5] = 0.0
    q, scale = quantize_rows(t)
    assert q.dtype == torch.int8 and scale.shape == (6, 1) and q.abs().max() == 127
    quantized = fake_quant(t)
    assert torch.equal(quantized, q.float() * scale)
    assert ((quantized - t).abs() <= scale / 2 + 1e-6).all()   # round-to-nearest: at most half a step
    assert (quantized[0, :5] == 0).all()                        # zero is on the grid: pruned stays pruned
    leaf = t.clone().requires_grad_(True)
    upstream = torch.randn_like(t)
    (fake_quant(leaf) * upstream).sum().backward()
    assert torch.equal(leaf.grad, upstream)


def test_the_exported_int8_model_reloads_and_matches_the_fake_quant_model(tiny_model, tmp_path):
    compressor = Compressor(CompressConfig(sparsity=0.5, prune_steps=1, qat_steps=1), tiny_model, total_steps=2)
    compressor.sync(1)   # pruned to the target; the last step is QAT
    assert compressor.qat
    tiny_model.save_pretrained(tmp_path / "hf")
    tiny_model.eval()
    ids = torch.randint(0, 1000, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fake = tiny_model(input_ids=ids).logits
        set_qat(compressor.linears, False)
        dense = tiny_model(input_ids=ids).logits
    manifest = export_int8(_with_tokenizer(tmp_path / "hf"), tmp_path / "int8")
    assert manifest["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert set(manifest["quantized"]) == set(compressor.linears)
    model = load_int8(tmp_path / "int8")
    assert all(isinstance(model.get_submodule(name), Int8Linear) for name in manifest["quantized"])
    assert model.get_submodule(manifest["quantized"][0]).weight.dtype == torch.int8
    with torch.no_grad():
        int8 = model(input_ids=ids).logits
    assert (int8 - fake).abs().max() < 1e-3 < (int8 - dense).abs().max()   # QAT simulated exactly this
    assert json.loads((tmp_path / "int8" / MANIFEST).read_text()) == manifest
    assert (tmp_path / "int8" / WEIGHTS).exists() and directory_mb(tmp_path / "int8") < directory_mb(tmp_path / "hf")
    out = model.generate(ids[:1], max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 13)


def _with_tokenizer(hf_dir):
    """The tiny model's directory with the SmolLM2 tokenizer it was built with (save_pretrained writes none)."""
    from transformers import AutoTokenizer

    from distill_ray.models import resolve_model

    AutoTokenizer.from_pretrained(resolve_model("smollm2")).save_pretrained(hf_dir)
    return hf_dir


def test_compress_is_validated_at_the_edge():
    assert not CompressConfig().active and not CompressConfig(export_int8=True).active
    assert CompressConfig(qat_steps=3).active and CompressConfig(sparsity=0.3).active
    for bad in ({"sparsity": 1.0}, {"sparsity": -0.1}, {"prune_steps": 0}, {"qat_steps": -1}, {"bits": 4}):
        with pytest.raises(ValueError):
            CompressConfig(**bad)
    with pytest.raises(ValueError, match="ZeRO-3"):
        TrainConfig(zero_stage=3, compress={"sparsity": 0.5})
    with pytest.raises(ValueError, match="offline"):
        TrainConfig(mode="on_policy", compress={"qat_steps": 2})
    TrainConfig(zero_stage=3, compress={"export_int8": True})   # quantizing after training needs no masks
    for bad in ({"qat_steps": 4}, {"prune_steps": 5}):   # nothing left to prune in; a ramp past the run's end
        with pytest.raises(ValueError, match="short of the target"):
            Compressor(CompressConfig(sparsity=0.5, **bad), torch.nn.Linear(2, 2), total_steps=4)


@pytest.mark.slow
def test_a_zero2_run_on_two_workers_prunes_quantizes_and_exports_int8(ray_cluster, tiny_dirs, tmp_path):
    """Through Ray Train + DeepSpeed ZeRO-2 (optimizer state partitioned over 2 workers, whose fp32 master
    weights never see the masks): the exported student has exactly the target sparsity and its int8 export
    loads and keeps it."""
    import ray.data
    from transformers import AutoModelForCausalLM

    from distill_ray.train import TrainSettings, train_student
    from distill_ray.train.int8 import INT8_DIR

    chat = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    rows = [{"prompt_text": chat.format(f"Say {w}"), "target_text": f"{w} {w} {w}"}
            for w in ["red", "green", "blue", "cat"] * 8]
    settings = TrainSettings(workers=2, zero_stage=2, epochs=2, batch_size=4, lr=3e-3, log_every=0,
                             tensorboard=False, compress={"sparsity": 0.5, "prune_steps": 3, "qat_steps": 2,
                                                          "export_int8": True})
    result = train_student(tiny_dirs[0], ray.data.from_items(rows), tmp_path / "student", settings)
    assert result.steps == 8 and result.loss_history[-1] < result.loss_history[0]
    student = AutoModelForCausalLM.from_pretrained(result.output_dir)
    linears = compressible_linears(student)
    total = sum(m.weight.numel() for m in linears.values())
    assert model_sparsity(linears) == _pruned_count(linears, 0.5) / total
    manifest = json.loads((tmp_path / "student" / INT8_DIR / MANIFEST).read_text())
    assert manifest["sparsity"] == model_sparsity(linears)
    int8 = load_int8(tmp_path / "student" / INT8_DIR)
    assert all((int8.get_submodule(name).weight == 0).float().mean() >= 0.5 - 1e-3 for name in linears)
