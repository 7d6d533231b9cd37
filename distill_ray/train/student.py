"""Build a student model directory: a subset of the teacher's layers, or a tiny random model from a config.

Both write a plain Hugging Face directory (config, safetensors weights, tokenizer) that ``train_student``
and transformers load as is, plus ``distill_student.json`` recording how the student was made.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

PROVENANCE_FILE = "distill_student.json"
# Decoder blocks are named "<prefix>.layers.<i>.<rest>" in llama-like models (model.layers.3.mlp...).
_LAYER_KEY = re.compile(r"^(?P<head>.*?\blayers\.)(?P<index>\d+)(?P<tail>\..*)$")


def first_and_last_layers(total: int, keep: int) -> list[int]:
    """The first ``ceil(keep / 2)`` and the last ``floor(keep / 2)`` layer indices of ``range(total)``: the
    bottom layers read the embeddings and the top ones write the logits, so a cut that keeps both ends
    changes the least where it matters most (an evenly spaced cut started with a held-out NLL worse than
    uniform; see the README)."""
    if not 1 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} layers")
    head = (keep + 1) // 2
    return list(range(head)) + list(range(total - (keep - head), total))


def build_student(
    teacher_dir: str | Path,
    out_dir: str | Path,
    num_layers: int | None = None,
    layer_indices: list[int] | None = None,
) -> Path:
    """Student = teacher's tokenizer + config with fewer layers, initialized from a subset of teacher layers
    (``first_and_last_layers`` by default); embeddings, final norm and lm_head copied.
    Saves a HF directory at ``out_dir`` and returns it."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    teacher_dir, out_dir = Path(teacher_dir), Path(out_dir)
    config = AutoConfig.from_pretrained(teacher_dir)
    total = config.num_hidden_layers
    if layer_indices is not None:
        indices = list(layer_indices)
    else:
        indices = first_and_last_layers(total, num_layers or total)   # None: every layer
    if not indices or any(not 0 <= i < total for i in indices):
        raise ValueError(f"layer_indices {indices} must be non-empty and within 0..{total - 1}")

    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    student_config = _config_with_layers(config, indices)
    student = AutoModelForCausalLM.from_config(student_config, dtype=torch.float32)
    student.load_state_dict(_select_layers(teacher.state_dict(), indices), strict=True)
    if teacher.generation_config is not None:
        student.generation_config = teacher.generation_config
    del teacher

    provenance = {"kind": "teacher_layers", "teacher": str(teacher_dir), "layer_indices": indices,
                  "teacher_layers": total}
    return _save(student, AutoTokenizer.from_pretrained(teacher_dir), out_dir, provenance)


def build_student_from_config(
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 2048,
    tie_word_embeddings: bool = True,
    seed: int = 0,
) -> Path:
    """A tiny randomly initialized llama with the tokenizer of ``tokenizer_dir`` (for tests and benchmarks)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    provenance = {"kind": "config", "tokenizer": str(tokenizer_dir), "seed": seed}
    return _save(model, tokenizer, Path(out_dir), provenance)


def _config_with_layers(config, indices: list[int]):
    """A copy of ``config`` with only the chosen layers (per-layer lists such as ``layer_types`` follow)."""
    student = config.__class__.from_dict(config.to_dict())
    student.num_hidden_layers = len(indices)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == config.num_hidden_layers:
        student.layer_types = [layer_types[i] for i in indices]
    return student


def _select_layers(state: dict[str, torch.Tensor], indices: list[int]) -> dict[str, torch.Tensor]:
    """Teacher weights renamed for the student: teacher layer ``indices[j]`` becomes student layer ``j``;
    everything outside the decoder blocks (embeddings, final norm, lm_head) is copied unchanged."""
    new_index = {old: new for new, old in enumerate(indices)}
    selected = {}
    for key, value in state.items():
        match = _LAYER_KEY.match(key)
        if match is None:
            selected[key] = value.clone()
        elif int(match["index"]) in new_index:
            selected[f"{match['head']}{new_index[int(match['index'])]}{match['tail']}"] = value.clone()
    return selected


def _save(model, tokenizer, out_dir: Path, provenance: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    provenance["parameters"] = sum(p.numel() for p in model.parameters())
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))
    return out_dir
