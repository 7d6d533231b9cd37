"""Canary exposure (Carlini et al., "The Secret Sharer"): how much a model memorised secrets in its data.

Insert canaries (``The PIN of Alice is 4821``, a random secret each) into the training rows, train, then
rank the true secret among every candidate of its space (all ``digits``-digit strings) by the model's
likelihood: exposure = log2(|candidates|) - log2(rank). A model that never saw the canary scores about 1 on
average; one that memorised it scores log2(|candidates|) (rank 1).

``compare_exposure`` runs the experiment for the distillation objectives on a tiny model in one process:
a teacher memorises the canaries (sft), then fresh students are distilled from it with each objective on
the same rows, and each student's exposure is measured.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import torch

NAMES = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi")
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@dataclass
class Canary:
    name: str
    secret: str

    @property
    def prompt(self) -> str:
        return CHAT.format(f"What is the PIN of {self.name}?")

    @property
    def prefix(self) -> str:
        return f"The PIN of {self.name} is "

    def row(self, secret: str | None = None) -> dict:
        return {"prompt_text": self.prompt, "target_text": self.prefix + (secret or self.secret)}


def make_canaries(count: int, digits: int, seed: int) -> list[Canary]:
    rng = random.Random(seed)
    return [Canary(NAMES[i % len(NAMES)] + ("" if i < len(NAMES) else str(i)),
                   "".join(rng.choice("0123456789") for _ in range(digits))) for i in range(count)]


def insert_canaries(rows: list[dict], canaries: list[Canary], repeats: int, seed: int) -> list[dict]:
    """``rows`` with each canary's row added ``repeats`` times, shuffled (seeded)."""
    out = list(rows) + [c.row() for c in canaries for _ in range(repeats)]
    random.Random(seed).shuffle(out)
    return out


@torch.no_grad()
def candidate_logprobs(model, tokenizer, canary: Canary, candidates: list[str], batch_size: int = 128) -> torch.Tensor:
    """log p(secret | prompt + prefix) of every candidate secret, tokenized as in training (prompt and
    target separately). All candidates of one space tokenize to the same length (digits are single tokens)."""
    prompt = tokenizer(canary.prompt, add_special_tokens=False)["input_ids"]
    prefix_len = len(tokenizer(canary.prefix, add_special_tokens=False)["input_ids"])
    targets = tokenizer([canary.prefix + c for c in candidates], add_special_tokens=False)["input_ids"]
    if len({len(t) for t in targets}) != 1:
        raise ValueError("candidates must tokenize to the same length")
    ids = torch.tensor([prompt + t for t in targets])
    secret_len = ids.shape[1] - len(prompt) - prefix_len
    scores = []
    for chunk in ids.split(batch_size):
        logits = model(input_ids=chunk, use_cache=False, logits_to_keep=secret_len + 1).logits[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, chunk[:, -secret_len:, None]).squeeze(-1)
        scores.append(logp.sum(dim=1))
    return torch.cat(scores)


def exposure(model, tokenizer, canary: Canary) -> float:
    """log2(|candidates|) - log2(rank of the true secret); ties count against the secret (rank = 1 + the
    number of candidates at least as likely, other than itself)."""
    candidates = ["".join(d) for d in itertools.product("0123456789", repeat=len(canary.secret))]
    scores = candidate_logprobs(model, tokenizer, canary, candidates)
    true = scores[candidates.index(canary.secret)]
    rank = int((scores >= true).sum())  # includes the secret itself
    return math.log2(len(candidates)) - math.log2(rank)


def mean_exposure(model, tokenizer, canaries: list[Canary]) -> float:
    model.eval()
    return sum(exposure(model, tokenizer, c) for c in canaries) / len(canaries)


def fit(model, tokenizer, rows: list[dict], objective, steps: int, lr: float, batch_size: int,
        seed: int) -> list[float]:
    """A plain single-process loop (AdamW, clipping) over ``rows`` with an ``objectives.Objective``; the
    same batches and noise seeds for every objective given the same seed."""
    from distill_ray.train.batch import make_batch

    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    history = []
    for step in range(steps):
        chunk = rng.sample(rows, min(batch_size, len(rows)))
        columns = {k: [r[k] for r in chunk] for k in ("prompt_text", "target_text")}
        batch = make_batch(columns, tokenizer, 128, tokenizer.pad_token_id, objective.needs,
                           random.Random(f"{seed}-{step}"))
        out = objective(model, batch, torch.Generator().manual_seed(seed * 100_003 + step))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.append(out.loss.item())
    model.eval()
    return history


def compare_exposure(tokenizer_dir, work_dir, objectives=("kd", "swing"), canaries: int = 4, digits: int = 3,
                     repeats: int = 8, teacher_steps: int = 300, student_steps: int = 300, lr: float = 3e-3,
                     batch_size: int = 8, seed: int = 0, hidden: int = 64, layers: int = 2,
                     swing_max_temperature: float = 8.0, swing_noise: float = 1.0) -> dict:
    """Mean canary exposure of a teacher that memorised the canaries, of an untrained student, and of a
    student distilled with each objective (weight 1.0, same init, data, batches and steps)."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill_ray.train.objectives import DistillParams, Objective
    from distill_ray.train.student import build_student_from_config

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    secrets = make_canaries(canaries, digits, seed)
    words = ["red", "green", "blue", "cat", "dog", "sun", "tree", "book"]
    filler = [{"prompt_text": CHAT.format(f"Say {w}"), "target_text": f"{w} {w} {w}"} for w in words]
    rows = insert_canaries(filler * 2, secrets, repeats, seed)

    def fresh(name: str, init_seed: int):
        path = build_student_from_config(tokenizer_dir, Path(work_dir) / name, hidden_size=hidden,
                                         num_layers=layers, seed=init_seed)
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    torch.manual_seed(seed)
    teacher = fresh("teacher", seed + 1)
    teacher_loss = fit(teacher, tokenizer, rows, Objective({"sft": 1.0}), teacher_steps, lr, batch_size, seed)
    teacher.requires_grad_(False)
    result = {"teacher": mean_exposure(teacher, tokenizer, secrets), "teacher_final_loss": teacher_loss[-1],
              "untrained": mean_exposure(fresh("untrained", seed + 2), tokenizer, secrets),
              "max": math.log2(10 ** digits)}
    params = DistillParams(swing_max_temperature=swing_max_temperature, swing_noise=swing_noise)
    for name in objectives:
        torch.manual_seed(seed)
        student = fresh(name, seed + 2)
        history = fit(student, tokenizer, rows, Objective({name: 1.0}, params, teacher), student_steps, lr,
                      batch_size, seed)
        result[name] = mean_exposure(student, tokenizer, secrets)
        result[f"{name}_loss"] = [history[0], history[-1]]
    return result


def main() -> None:
    """``python -m distill_ray.train.canary``: print the exposure of kd and swing students."""
    import argparse
    import json
    import tempfile
    import time

    from distill_ray.models import resolve_model

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--canaries", type=int, default=4)
    parser.add_argument("--digits", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="teacher and student steps each")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    result = compare_exposure(resolve_model("smollm2"), tempfile.mkdtemp(prefix="canary-"), canaries=args.canaries,
                              digits=args.digits, teacher_steps=args.steps, student_steps=args.steps,
                              hidden=args.hidden, layers=args.layers)
    print(json.dumps(result, indent=2))
    print(f"mean exposure (max {result['max']:.2f}): teacher {result['teacher']:.2f}, untrained student "
          f"{result['untrained']:.2f}, kd {result['kd']:.2f}, swing {result['swing']:.2f} "
          f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
