"""Sparse + quantized students (``train.compress``): gradual magnitude pruning during distillation, then
quantization-aware training (QAT) to int8.

Pruning (Zhu & Gupta, 2017): the decoder's Linear weights (attention and MLP projections; embeddings, norms
and lm_head stay dense) lose their smallest-magnitude entries, each matrix the same share, rising on a cubic
schedule to ``sparsity``: fast while the model has slack, slowly near the target. The training objective
(kd: the teacher's signal) heals the pruned student as it goes. After every optimizer step the masks are
re-applied, so a pruned weight stays zero whatever the optimizer's momentum does.

QAT: the last ``qat_steps`` steps run those Linears on int8 fake-quantized weights (symmetric, one scale per
output channel) and activations (symmetric, one scale per token), the arithmetic of the exported int8 kernel
(``int8.py``), with straight-through gradients, so the weights learn to sit well on the int8 grid. Zero stays
zero under a symmetric grid: QAT keeps the masks.

The masks need whole weight matrices: ZeRO-0/1/2 keep the full parameters on every worker (only optimizer
state and gradients are partitioned), so every worker computes the same masks from the same weights. ZeRO-3
partitions the weights themselves and is refused at config validation. A resumed run recovers its masks from
the checkpointed weights (a pruned weight is exactly zero).
"""

from __future__ import annotations

import re
import types

import torch
import torch.nn.functional as F

from distill_ray.config import CompressConfig

QMAX = 127   # symmetric int8: [-127, 127], so that zero is exact and the grid is the same on both sides
_DECODER_BLOCK = re.compile(r"\blayers\.\d+\.")


def compressible_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The Linear layers inside the decoder blocks, by module name (what is pruned and quantized)."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and _DECODER_BLOCK.search(name)}


def cubic_sparsity(step: int, target: float, ramp_steps: int) -> float:
    """Sparsity after ``step`` optimizer steps: ``target * (1 - (1 - step / ramp_steps)^3)``, exactly ``target``
    from ``ramp_steps`` on."""
    progress = min(1.0, step / ramp_steps) if ramp_steps > 0 else 1.0
    return target * (1.0 - (1.0 - progress) ** 3)


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True where ``weight`` survives: the ``round(sparsity * numel)`` smallest |w| are pruned (ties at the
    threshold together). Already-pruned weights are zero, hence the smallest: masks only ever grow."""
    pruned = round(sparsity * weight.numel())
    if pruned == 0:
        return torch.ones_like(weight, dtype=torch.bool)
    threshold = weight.detach().abs().flatten().float().kthvalue(pruned).values
    return weight.detach().abs() > threshold


def quantize_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per row (per slice of the last dim): (int8 values, float32 scales of
    shape ``t.shape[:-1] + (1,)``). A weight's rows are its output channels, an activation's its tokens."""
    t = t.detach().float()
    scale = (t.abs().amax(dim=-1, keepdim=True) / QMAX).clamp_min(1e-12)   # an all-zero row: any scale works
    return torch.round(t / scale).clamp(-QMAX, QMAX).to(torch.int8), scale


class _FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        q, scale = quantize_rows(t)
        return (q.float() * scale).to(t.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


def fake_quant(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to its per-row int8 grid in the forward pass; the identity for gradients (straight-through
    estimator: rounding has zero gradient almost everywhere, so QAT passes the gradient through it). A Function
    rather than ``t + (q - t).detach()``, whose float sum is not exactly the grid value."""
    return _FakeQuant.apply(t)


def _qat_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(fake_quant(x), fake_quant(self.weight), self.bias)


def set_qat(linears: dict[str, torch.nn.Linear], enabled: bool) -> None:
    """Run ``linears`` on fake-quantized weights and activations (or plainly again). An instance's forward
    shadows its class's: parameters, their names and DeepSpeed's hooks on them are untouched."""
    for module in linears.values():
        if enabled:
            module.forward = types.MethodType(_qat_forward, module)
        else:
            module.__dict__.pop("forward", None)


def model_sparsity(linears: dict[str, torch.nn.Linear]) -> float:
    """The share of exactly-zero weights over ``linears``."""
    zeros = sum(int((m.weight == 0).sum()) for m in linears.values())
    return zeros / max(1, sum(m.weight.numel() for m in linears.values()))


class Compressor:
    """Applies ``train.compress`` to a training run's model, step by step (``sync`` after every optimizer step
    and once at the start, with the steps taken so far)."""

    def __init__(self, config: CompressConfig, model: torch.nn.Module, total_steps: int):
        self.config, self.total_steps = config, total_steps
        self.linears = compressible_linears(model)
        self.qat_from = total_steps - config.qat_steps   # QAT once this many steps are done
        self.ramp_steps = config.prune_steps or self.qat_from
        if config.sparsity and not 1 <= self.ramp_steps <= total_steps:
            raise ValueError(f"train.compress: the run's {total_steps} steps ({config.qat_steps} of them QAT) "
                             f"cannot prune over {self.ramp_steps}: it would end short of the target sparsity")
        self.masks: dict[str, torch.Tensor] = {}
        self.qat = False

    @torch.no_grad()
    def sync(self, step: int) -> None:
        """After ``step`` optimizer steps: masks at the schedule's sparsity, re-applied; QAT from ``qat_from``."""
        if self.config.sparsity:
            if step <= self.ramp_steps or not self.masks:   # after the ramp the masks are fixed
                sparsity = cubic_sparsity(step, self.config.sparsity, self.ramp_steps)
                self.masks = {name: magnitude_mask(m.weight, sparsity) for name, m in self.linears.items()}
            for name, module in self.linears.items():
                module.weight.mul_(self.masks[name])
        if self.config.qat_steps and step >= self.qat_from and not self.qat:
            set_qat(self.linears, True)
            self.qat = True


def compressor_for_run(config: CompressConfig, model: torch.nn.Module, total_steps: int | None,
                       step: int) -> Compressor | None:
    """The run's compressor, synced to ``step`` (a resumed run's masks come back from its zeros), or None."""
    if not config.active:
        return None
    if not total_steps:
        raise ValueError("train.compress needs the run's number of optimizer steps")
    compressor = Compressor(config, model, total_steps)
    compressor.sync(step)
    return compressor
