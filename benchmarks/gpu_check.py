"""The trainer's GPU path in one short, prepared check, with torch, transformers and DeepSpeed only (no Ray, no
vLLM, no network): what a GPU machine runs to show the training loop works there before a cluster does.

On a CUDA device (NCCL, world size 1, bf16), for ZeRO-2 and ZeRO-3: build a tiny Llama with its own word-level
tokenizer, start the DeepSpeed engine as a Ray Train worker does (``train.loop.build_engine``), take a few
optimizer steps of each objective family (sft; kd from a teacher model on the same device; the on-policy
divergence on a rollout batch), close each step with the loop's own all-reduce (``train.loop._close_step``, which
once put a CPU tensor on the NCCL group), export with ``export_hf`` (ZeRO-3 gathers), reload the export and
generate. It prints one line per check and ends with ``gpu_check: ok`` or the first failure. Without CUDA it runs
the same on CPU with gloo (how it is tested here).

    PYTHONPATH=. python benchmarks/gpu_check.py [--steps 4] [--zero 2 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import torch

WORDS = ["<pad>", "<eos>", "<unk>", "say", "red", "green", "blue", "cat", "the", "a", "is", "and", ":", "?"]


def tiny_model_dir(root: Path, seed: int) -> Path:
    """A 4-layer Llama over a word-level tokenizer built here (no download, no GGUF)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                        unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=0, eos_token_id=1, bos_token_id=1, tie_word_embeddings=False)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def init_process_group(cuda: bool) -> None:
    import deepspeed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")


def rows() -> dict:
    prompts = [f"say {w} ?" for w in ("red", "green", "blue", "cat")]
    return {"prompt_text": prompts, "target_text": [f"{p.split()[1]} {p.split()[1]} {p.split()[1]}" for p in prompts]}


def check(name: str, fn) -> None:
    started = time.perf_counter()
    detail = fn()
    print(f"gpu_check: {name}: ok ({time.perf_counter() - started:.1f} s){': ' + detail if detail else ''}", flush=True)


def train_steps(init_dir: Path, zero: int, steps: int, cuda: bool, objectives: dict, teacher_dir: Path | None,
                out_dir: Path) -> str:
    from transformers import AutoModelForCausalLM

    from distill_ray.train.batch import make_batch
    from distill_ray.train.config import TrainSettings
    from distill_ray.train.loop import TrainState, _close_step, _Window, build_engine, export_hf
    from distill_ray.train.objectives import DistillParams, Objective

    settings = TrainSettings(workers=1, use_gpu=cuda, zero_stage=zero, batch_size=4, lr=3e-3, objectives=objectives,
                             teacher_dir=str(teacher_dir) if teacher_dir else None, max_length=32)
    engine, tokenizer = build_engine(str(init_dir), settings, steps, None)
    teacher = None
    if teacher_dir:
        dtype = torch.bfloat16 if cuda else torch.float32
        teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=dtype).to(engine.device).eval()
    objective = Objective(objectives, DistillParams(), teacher)
    batch = make_batch(rows(), tokenizer, settings.max_length, tokenizer.pad_token_id, objective.needs)
    batch = {k: v.to(engine.device) for k, v in batch.items()}
    state, losses = TrainState(), []
    for _ in range(steps):
        window = _Window(started=time.perf_counter())
        out = objective(engine, batch)
        engine.backward(out.loss, scale_wrt_gas=False)
        engine.step()
        window.loss, window.micro, window.samples, window.tokens = out.total, 1, 4, out.tokens
        _close_step(state, window, engine.device)          # the loop's all-reduce, on the engine's device
        losses.append(state.loss_history[-1])
    assert losses[-1] < losses[0], losses
    export_hf(engine, tokenizer, out_dir, zero, rank=0)
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir)
    ids = tokenizer("say red ?", return_tensors="pt")["input_ids"]
    text = tokenizer.decode(reloaded.generate(ids, max_new_tokens=3, do_sample=False)[0, ids.shape[1]:])
    memory = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if cuda else ""
    return f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, dtype {next(engine.module.parameters()).dtype}, " \
           f"reloaded export says {text!r}{memory}"


def on_policy_step(init_dir: Path, teacher_dir: Path, zero: int, cuda: bool) -> str:
    import numpy as np

    from distill_ray.onpolicy.loss import on_policy_loss
    from distill_ray.onpolicy.rollouts import rollout_batch
    from distill_ray.teachers.hf import HFEngine
    from distill_ray.train.config import TrainSettings
    from distill_ray.train.loop import build_engine

    # Adam's first step moves every weight by about lr whatever the gradient's size, which on this tiny model
    # raises the divergence once before it falls: a small lr and six steps.
    settings = TrainSettings(workers=1, use_gpu=cuda, zero_stage=zero, lr=3e-4, max_length=32)
    engine, tokenizer = build_engine(str(init_dir), settings, 6, None)
    scorer = HFEngine(str(teacher_dir), device="cuda" if cuda else "cpu")
    prompts = rows()["prompt_text"]
    completions = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in rows()["target_text"]]
    scores = scorer.score(prompts, completions, 5)
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    batch = rollout_batch(prompt_ids, completions, [(i, np.asarray(lp, np.float64)) for i, lp in scores],
                          [1.0] * 4, [True] * 4, settings.max_length, tokenizer.pad_token_id)
    batch = {k: v.to(engine.device) for k, v in batch.items()}
    first = None
    for _ in range(6):
        loss = on_policy_loss(engine, batch, beta=1.0, sft_weight=0.0, normaliser=float(loss_tokens(batch)))
        engine.backward(loss.loss, scale_wrt_gas=False)
        engine.step()
        first = first if first is not None else loss.reverse_kl
    assert loss.reverse_kl < first, (first, loss.reverse_kl)
    return f"reverse KL summed over the batch {first:.4f} -> {loss.reverse_kl:.4f}"


def loss_tokens(batch: dict) -> int:
    return int((batch["labels"] != -100).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--zero", type=int, nargs="+", default=[2, 3])
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    print(f"gpu_check: torch {torch.__version__}, device {torch.cuda.get_device_name(0) if cuda else 'cpu'}",
          flush=True)
    init_process_group(cuda)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    student, teacher = tiny_model_dir(work / "student", seed=0), tiny_model_dir(work / "teacher", seed=1)
    for zero in args.zero:
        check(f"ZeRO-{zero} sft", lambda: train_steps(student, zero, args.steps, cuda, {"sft": 1.0}, None,
                                                      work / f"sft{zero}"))
        check(f"ZeRO-{zero} sft + kd (teacher on the device)",
              lambda: train_steps(student, zero, args.steps, cuda, {"sft": 1.0, "kd": 0.5}, teacher, work / f"kd{zero}"))
        check(f"ZeRO-{zero} on-policy divergence", lambda: on_policy_step(student, teacher, zero, cuda))
    print("gpu_check: ok", flush=True)


if __name__ == "__main__":
    main()
