"""Mixture-of-experts students by sparse upcycling: the dense llama-like student's MLPs become Mixtral MoE layers.

Each of a layer's ``experts`` starts as a copy of that layer's MLP (gate, up and down projections) and a new
router (seeded, small random weights) picks ``top_k`` of them per token. Mixtral renormalises the chosen
experts' router weights to sum to 1, so while the experts are still identical the MoE layer computes exactly
the dense MLP whatever the router says: the upcycled student starts as the dense one (tested), and the experts
drift apart as each trains on the tokens routed to it. The result is a plain ``MixtralForCausalLM`` directory
(attention, norms, embeddings and rotary settings copied unchanged), which transformers reloads as is.

One consequence of that renormalisation: with ``top_k`` 1 the chosen expert's weight is always 1, so the task
loss gives the router no gradient; only the load-balancing loss (``Objective``'s ``router_aux`` term) trains it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from distill_ray.config import MoeConfig
from distill_ray.train.student import PROVENANCE_FILE, _save

UPCYCLED_DIR = "upcycled"   # under a run's output: the upcycled start, removed once the run has exported its student
# The dense MLP's projections: "<prefix>.layers.<i>.mlp.<gate|up|down>_proj.weight".
_MLP_KEY = re.compile(r"^(?P<layer>.*\blayers\.\d+)\.mlp\.(?P<proj>gate|up|down)_proj\.weight$")


def is_moe(config) -> bool:
    """True for a mixture-of-experts config (Mixtral's names its expert count ``num_local_experts``)."""
    return getattr(config, "num_local_experts", None) is not None


def moe_config(dense, experts: int, top_k: int, aux_loss_weight: float):
    """The Mixtral config of an upcycled ``dense`` llama config: the same shapes, ``experts`` MLPs per layer."""
    from transformers import MixtralConfig

    # Mixtral is llama's layout with MoE MLPs; another family's norms or attention would be silently dropped.
    if dense.model_type != "llama" or getattr(dense, "attention_bias", False) or getattr(dense, "mlp_bias", False):
        raise ValueError(f"upcycling needs a llama student without attention or MLP biases (SmolLM2 is one), not a "
                         f"{dense.model_type}")
    if not 1 <= top_k <= experts:
        raise ValueError(f"top_k {top_k} must be between 1 and experts {experts}")
    shared = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "initializer_range",
              "rms_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings",
              "attention_dropout", "rope_parameters")
    # The loss adds the load-balancing term itself (objectives.py); the saved model does not compute router
    # logits by default (a cached generation step would misalign them with the attention mask).
    return MixtralConfig(**{name: getattr(dense, name) for name in shared}, num_local_experts=experts,
                         num_experts_per_tok=top_k, router_aux_loss_coef=aux_loss_weight,
                         output_router_logits=False, sliding_window=None)


def upcycled_state(dense: dict[str, torch.Tensor], routers: dict[str, torch.Tensor],
                   experts: int) -> dict[str, torch.Tensor]:
    """Mixtral weights from a dense llama state dict: every layer's MLP copied into each expert, stacked as
    Mixtral stores them (``gate_up_proj`` [E, 2I, H] with the gate rows first, ``down_proj`` [E, H, I]), and the
    given router of each layer (``routers``: layer prefix -> [E, H]); everything else unchanged."""
    state, mlps = {}, {}
    for key, value in dense.items():
        match = _MLP_KEY.match(key)
        if match is None:
            state[key] = value.clone()
        else:
            mlps.setdefault(match["layer"], {})[match["proj"]] = value
    for layer, proj in mlps.items():
        gate_up = torch.cat([proj["gate"], proj["up"]], dim=0)
        state[f"{layer}.mlp.experts.gate_up_proj"] = gate_up.unsqueeze(0).repeat(experts, 1, 1)
        state[f"{layer}.mlp.experts.down_proj"] = proj["down"].unsqueeze(0).repeat(experts, 1, 1)
        state[f"{layer}.mlp.gate.weight"] = routers[layer].clone()
    return state


def upcycle(dense_dir: str | Path, out_dir: str | Path, experts: int, top_k: int, aux_loss_weight: float = 0.01,
            seed: int = 0) -> Path:
    """Write the upcycled MoE student of the dense student in ``dense_dir`` to ``out_dir`` (a HF directory with
    its tokenizer and a provenance file) and return it. Routers are drawn N(0, initializer_range), seeded: random
    rather than zero so that tokens spread over the experts from the first step (a zero router sends every token
    to the same top-k, the first indices)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, MixtralForCausalLM

    dense_dir = Path(dense_dir)
    dense = AutoModelForCausalLM.from_pretrained(dense_dir, dtype=torch.float32)
    config = moe_config(dense.config, experts, top_k, aux_loss_weight)
    generator = torch.Generator().manual_seed(seed)
    layers = [f"model.layers.{i}" for i in range(config.num_hidden_layers)]
    routers = {layer: torch.randn(experts, config.hidden_size, generator=generator) * config.initializer_range
               for layer in layers}
    moe = MixtralForCausalLM(config).to(torch.float32)
    moe.load_state_dict(upcycled_state(dense.state_dict(), routers, experts), strict=True)
    if dense.generation_config is not None:
        moe.generation_config = dense.generation_config
    provenance = {"kind": "upcycled", "dense": str(dense_dir), "experts": experts, "top_k": top_k,
                  "aux_loss_weight": aux_loss_weight, "seed": seed, "dense_parameters": _count(dense),
                  "active_parameters": active_parameters(moe), "dense_provenance": _provenance(dense_dir)}
    del dense
    return _save(moe, AutoTokenizer.from_pretrained(dense_dir), Path(out_dir), provenance)


def active_parameters(model) -> int:
    """Parameters one token runs through: all of them but the ``experts - top_k`` experts it is not routed to."""
    config = model.config
    if not is_moe(config):
        return _count(model)
    per_expert = 3 * config.hidden_size * config.intermediate_size
    idle = config.num_local_experts - config.num_experts_per_tok
    return _count(model) - config.num_hidden_layers * idle * per_expert


def upcycle_for_run(init_dir: Path, output_dir: Path, moe: MoeConfig, seed: int) -> Path:
    """The MoE start of a training run with ``train.moe``: ``init_dir`` upcycled under the run's output, or
    ``init_dir`` itself when it is already an MoE student with those experts and top-k (a later phase of a staged
    run, a continued MoE student)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(init_dir)
    if not is_moe(config):
        return upcycle(init_dir, output_dir / UPCYCLED_DIR, moe.experts, moe.top_k, moe.aux_loss_weight, seed)
    if (config.num_local_experts, config.num_experts_per_tok) != (moe.experts, moe.top_k):
        raise ValueError(f"{init_dir} is an MoE student with {config.num_local_experts} experts, top-"
                         f"{config.num_experts_per_tok}; train.moe asks for {moe.experts}, top-{moe.top_k}")
    return init_dir


def release_upcycled(output_dir: Path) -> None:
    """Remove the run's upcycled start once its student is exported (the trained student supersedes it)."""
    shutil.rmtree(output_dir / UPCYCLED_DIR, ignore_errors=True)


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _provenance(model_dir: Path) -> dict | None:
    path = model_dir / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.exists() else None
