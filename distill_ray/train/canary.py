"""Canary exposure (Carlini et al., "The Secret Sharer"): how much a model memorised secrets in its data.

Insert canaries (``The PIN of Alice is 4821``, a random secret each) into the training rows, train, then
rank the true secret among every candidate of its space (all ``digits``-digit strings) by the model's
likelihood: exposure = log2(|candidates|) - log2(rank). A model that never saw the canary scores about 1 on
average; one that memorised it scores log2(|candidates|) (rank 1).

``compare_exposure`` runs the experiment for the distillation objectives on a tiny model in one process:
a teacher memorises the canaries (sft), then fresh students are distilled from it with each objective on
the same rows, and each student's exposure is measured beside its utility: the mean NLL per token on
non-private filler rows, those it trained on and held-out ones (a privacy gain bought by learning nothing
shows up there).
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
    target separately). All candidates of one space tokenize to the same length (digits are single tokens).
    Candidates that differ only in their last token share one forward pass, whose last position scores
    every last token at once: 10x fewer rows for digit secrets (10^(d-1) stems, not 10^d candidates)."""
    prompt = tokenizer(canary.prompt, add_special_tokens=False)["input_ids"]
    prefix_len = len(tokenizer(canary.prefix, add_special_tokens=False)["input_ids"])
    targets = tokenizer([canary.prefix + c for c in candidates], add_special_tokens=False)["input_ids"]
    if len({len(t) for t in targets}) != 1:
        raise ValueError("candidates must tokenize to the same length")
    secret_len = len(targets[0]) - prefix_len
    stems = sorted({tuple(t[:-1]) for t in targets})
    lasts = sorted({t[-1] for t in targets})
    stem_scores, last_scores = [], []
    for chunk in torch.tensor([prompt + list(stem) for stem in stems]).split(batch_size):
        logits = model(input_ids=chunk, use_cache=False, logits_to_keep=secret_len).logits.float()
        logp = torch.log_softmax(logits, dim=-1)   # position i predicts secret token i + 1
        known = chunk[:, chunk.shape[1] - secret_len + 1:]   # the stem's secret tokens (none for one-token secrets)
        stem_scores.append(logp[:, :-1].gather(-1, known[..., None]).squeeze(-1).sum(dim=1))
        last_scores.append(logp[:, -1, lasts])
    stem_index = {stem: i for i, stem in enumerate(stems)}
    last_index = {token: i for i, token in enumerate(lasts)}
    rows = torch.tensor([stem_index[tuple(t[:-1])] for t in targets])
    cols = torch.tensor([last_index[t[-1]] for t in targets])
    return torch.cat(stem_scores)[rows] + torch.cat(last_scores)[rows, cols]


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
        seed: int, privacy: dict | None = None) -> list[float]:
    """A plain single-process loop (AdamW, clipping) over ``rows`` with an ``objectives.Objective``; the
    same batches and noise seeds for every objective given the same seed. ``privacy``: make_batch's
    ``privacy_*`` keyword arguments (swing's scorer)."""
    from distill_ray.train.batch import make_batch

    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    history = []
    for step in range(steps):
        chunk = rng.sample(rows, min(batch_size, len(rows)))
        columns = {k: [r[k] for r in chunk] for k in ("prompt_text", "target_text")}
        batch = make_batch(columns, tokenizer, 128, tokenizer.pad_token_id, objective.needs,
                           random.Random(f"{seed}-{step}"), **(privacy or {}))
        out = objective(model, batch, torch.Generator().manual_seed(seed * 100_003 + step))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.append(out.loss.item())
    model.eval()
    return history


@torch.no_grad()
def mean_nll(model, tokenizer, rows: list[dict]) -> float:
    """Mean NLL per target token of ``rows`` (the utility measure: lower is better)."""
    from distill_ray.train.batch import make_batch
    from distill_ray.train.data import IGNORE_INDEX
    from distill_ray.train.objectives import forward

    columns = {k: [r[k] for r in rows] for k in ("prompt_text", "target_text")}
    model.eval()
    fwd = forward(model, make_batch(columns, tokenizer, 128, tokenizer.pad_token_id, set()))
    return float(torch.nn.functional.cross_entropy(fwd.logits.transpose(1, 2), fwd.labels, ignore_index=IGNORE_INDEX))


WORDS = ("red", "green", "blue", "cat", "dog", "sun", "tree", "book")
TRAIN_OFFSETS, HELDOUT_OFFSETS = (1, 3), (2,)


def filler_rows(offsets) -> list[dict]:
    """Non-private rows ``Say a b`` -> ``a b a b``, ``b`` the word ``offset`` places after ``a`` in WORDS.
    Held-out offsets give rows the students never saw but of the same words and form: their NLL rewards
    learning the filler's pattern, not only reciting its rows."""
    pairs = [(a, WORDS[(i + k) % len(WORDS)]) for k in offsets for i, a in enumerate(WORDS)]
    return [{"prompt_text": CHAT.format(f"Say {a} {b}"), "target_text": f"{a} {b} {a} {b}"} for a, b in pairs]


def compare_exposure(tokenizer_dir, work_dir, objectives=("kd", "swing"), canaries: int = 4, digits: int = 4,
                     repeats: int = 8, teacher_steps: int = 300, student_steps: int = 300, lr: float = 3e-3,
                     batch_size: int = 8, seed: int = 0, hidden: int = 64, layers: int = 2,
                     swing_max_temperature: float = 8.0, swing_noise: float = 1.0,
                     scorers: tuple[str, ...] = ("regex",)) -> dict:
    """Mean canary exposure of a teacher that memorised the canaries, of an untrained student, and of a
    student distilled with each objective (weight 1.0, same init, data, batches and steps); ``swing`` runs
    once per privacy scorer in ``scorers`` (named ``swing``, ``swing-list``, ...; the list scorer is given
    the canaries' secrets). ``result["utility"][model]``: mean NLL per token on the training filler rows
    (``train_nll``) and on held-out ones, unseen word pairs (``heldout_nll``)."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill_ray.train.objectives import DistillParams, Objective
    from distill_ray.train.student import build_student_from_config

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    secrets = make_canaries(canaries, digits, seed)
    filler, heldout = filler_rows(TRAIN_OFFSETS), filler_rows(HELDOUT_OFFSETS)
    rows = insert_canaries(filler, secrets, repeats, seed)

    def fresh(name: str, init_seed: int):
        path = build_student_from_config(tokenizer_dir, Path(work_dir) / name, hidden_size=hidden,
                                         num_layers=layers, seed=init_seed)
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    result = {"max": math.log2(10 ** digits), "utility": {}}

    def measure(name: str, model) -> float:
        """``name``'s exposure; its utility goes to ``result["utility"]``."""
        result["utility"][name] = {"train_nll": mean_nll(model, tokenizer, filler),
                                   "heldout_nll": mean_nll(model, tokenizer, heldout)}
        return mean_exposure(model, tokenizer, secrets)

    torch.manual_seed(seed)
    teacher = fresh("teacher", seed + 1)
    teacher_loss = fit(teacher, tokenizer, rows, Objective({"sft": 1.0}), teacher_steps, lr, batch_size, seed)
    teacher.requires_grad_(False)
    result.update(teacher=measure("teacher", teacher), teacher_final_loss=teacher_loss[-1],
                  untrained=measure("untrained", fresh("untrained", seed + 2)))
    params = DistillParams(swing_max_temperature=swing_max_temperature, swing_noise=swing_noise)
    for name, objective, privacy in _students(objectives, scorers, [c.secret for c in secrets]):
        torch.manual_seed(seed)
        student = fresh(name, seed + 2)
        history = fit(student, tokenizer, rows, Objective({objective: 1.0}, params, teacher), student_steps, lr,
                      batch_size, seed, privacy)
        result[name] = measure(name, student)
        result[f"{name}_loss"] = [history[0], history[-1]]
    return result


def _students(objectives, scorers, secrets: list[str]):
    """(result name, objective, make_batch privacy kwargs) of each student to distil."""
    for objective in objectives:
        if objective != "swing":
            yield objective, objective, None
            continue
        for scorer in scorers:
            name = "swing" if scorer == "regex" else f"swing-{scorer}"
            yield name, "swing", {"privacy_scorer": scorer, "privacy_terms": secrets if scorer == "list" else ()}


def report(result: dict) -> str:
    """Exposure and utility side by side, one line per model."""
    lines = [f"{'model':<18} {'exposure':>8} {'NLL train filler':>17} {'NLL held-out filler':>20}"]
    for name, utility in result["utility"].items():
        lines.append(f"{name:<18} {result[name]:>8.2f} {utility['train_nll']:>17.3f} {utility['heldout_nll']:>20.3f}")
    return "\n".join(lines + [f"(exposure max {result['max']:.2f}: the secret ranked first; ~1: not memorised)"])


def main() -> None:
    """``python -m distill_ray.train.canary``: exposure and utility of kd and swing students."""
    import argparse
    import json
    import tempfile
    import time

    from distill_ray.models import resolve_model

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--canaries", type=int, default=4)
    parser.add_argument("--digits", type=int, default=4, help="secret length (the default regex scorer flags "
                        ">= 4 digits)")
    parser.add_argument("--steps", type=int, default=200, help="teacher and student steps each")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--scorers", nargs="+", default=["regex"], choices=["regex", "list", "likelihood"],
                        help="swing's privacy scorers, one swing student each")
    args = parser.parse_args()
    started = time.perf_counter()
    result = compare_exposure(resolve_model("smollm2"), tempfile.mkdtemp(prefix="canary-"), canaries=args.canaries,
                              digits=args.digits, teacher_steps=args.steps, student_steps=args.steps,
                              hidden=args.hidden, layers=args.layers, scorers=tuple(args.scorers))
    print(json.dumps(result, indent=2))
    print(report(result))
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
