"""Training throughput: ``train_student`` (Ray Train + DeepSpeed) with 1 and 2 workers vs a plain
single-process torch loop, on the same model, rows and global batch, in one run.

Every run takes the same optimizer steps over the same global batch (split over the workers), with the same
tokenization, loss and optimizer. The baseline is timed with 1 and with ``max(workers)`` torch threads (the
Ray workers run one thread each) and the faster counts. Prints samples/s and tokens/s (target tokens, and
all non-padding tokens) and the ratios against the baseline.

    python benchmarks/train_throughput.py --steps 20 --workers 1 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def make_rows(count: int) -> list[dict]:
    """Puzzle-shaped rows: a few-shot-ish prompt of ~60 tokens and a short program as the target."""
    rows = []
    for i in range(count):
        a, b = i % 17 + 2, i % 23 + 5
        prompt = CHAT.format(f"Write g() returning x with sat(x) True.\ndef sat(x: int, a={a}, b={b}):\n"
                             f"    return x + a == b\nExample: def g(): return 10 - 3")
        rows.append({"prompt_text": prompt, "target_text": f"def g():\n    return {b} - {a}"})
    return rows


def baseline(init_dir: Path, rows: list[dict], steps: int, batch_size: int, settings) -> dict:
    """The same work in one process: AdamW, clipping, the same collate and loss; no Ray, no DeepSpeed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill_ray.train.data import collate, tokenize_rows
    from distill_ray.train.objectives import sft_loss

    tokenizer = AutoTokenizer.from_pretrained(init_dir)
    model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    samples = tokens = input_tokens = 0
    losses = []
    started = time.perf_counter()
    for step in range(steps):
        start = (step * batch_size) % len(rows)
        chunk = (rows + rows)[start:start + batch_size]
        batch = collate(tokenize_rows(tokenizer, [r["prompt_text"] for r in chunk],
                                      [r["target_text"] for r in chunk], settings.max_length),
                        tokenizer.pad_token_id)
        out = sft_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        losses.append(out.loss.item())
        samples += len(chunk)
        tokens += out.tokens
        input_tokens += int(batch["attention_mask"].sum())
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "samples": samples, "tokens": tokens, "input_tokens": input_tokens,
            "first_loss": losses[0], "last_loss": losses[-1]}


def ray_run(init_dir: Path, data: Path, work: Path, workers: int, args) -> tuple:
    from distill_ray.train import TrainSettings, train_student

    settings = TrainSettings(workers=workers, cpus_per_worker=min(0.5, 1.6 / workers),
                             zero_stage=args.zero_stage, batch_size=args.global_batch // workers, lr=1e-3,
                             max_steps=args.steps, epochs=1, log_every=0)
    result = train_student(init_dir, data, work / f"student-{workers}", settings)
    return result, settings


def measure(quick: bool = False) -> list[dict]:
    """One repetition for `distill-ray bench`: steady-state tokens/s and samples/s through Ray Train + DeepSpeed
    with 1 and 2 workers, against the plain single-process loop on the same model and batches."""
    args = parser().parse_args(["--steps", "4" if quick else "20"])
    init_dir, runs, base = run(args)
    rows = []
    for workers, (r, _) in runs.items():
        steady = r.seconds - r.epoch_start_seconds
        for unit, ours, plain in (("target tokens/s", r.tokens / steady, base["tokens"] / base["seconds"]),
                                  ("samples/s", r.samples / steady, base["samples"] / base["seconds"])):
            rows.append({"stage": "train", "case": f"tiny Llama, ZeRO-{args.zero_stage}, {unit.split('/')[0]}",
                         "unit": unit, "workers": workers, "ours": ours, "baseline": plain,
                         "baseline_name": "plain PyTorch loop, 1 process"})
    return rows


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--global-batch", type=int, default=8, help="rows per optimizer step, all workers")
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--init-dir", help="train this HF student instead of a tiny one built from config")
    return parser


def main() -> None:
    args = parser().parse_args()
    init_dir, runs, base = run(args)
    report(init_dir, runs, base, args)


def run(args) -> tuple[Path, dict, dict]:
    """(student dir, {workers: (TrainResult, settings)}, the fastest plain-loop baseline)."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    import pandas as pd
    import ray

    from distill_ray.models import resolve_model
    from distill_ray.train import build_student_from_config

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    init_dir = Path(args.init_dir) if args.init_dir else build_student_from_config(
        resolve_model("smollm2"), work / "init", hidden_size=args.hidden, num_layers=args.layers)
    rows = make_rows(args.steps * args.global_batch)
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), num_cpus=None if os.environ.get("RAY_ADDRESS") else 2,
                 include_dashboard=False, log_to_driver=False, _temp_dir=str(work / "ray"))
    # The pipeline hands training a Parquet directory: go through the same path.
    (work / "data").mkdir()
    pd.DataFrame(rows).to_parquet(work / "data" / "part-0.parquet")
    runs = {w: ray_run(init_dir, work / "data", work, w, args) for w in args.workers}
    settings = next(iter(runs.values()))[1]

    bases = {}
    for threads in sorted({1, max(args.workers)}):
        torch.set_num_threads(threads)
        bases[threads] = baseline(init_dir, rows, args.steps, args.global_batch, settings)
        print(f"plain torch with {threads} thread(s): {bases[threads]['seconds'] / args.steps:.3f} s/step")
    base = min(bases.values(), key=lambda b: b["seconds"])
    return init_dir, runs, base


def report(init_dir: Path, runs: dict, base: dict, args) -> None:
    from transformers import AutoModelForCausalLM

    rates = {"plain torch, 1 process": (base["samples"] / base["seconds"], base["tokens"] / base["seconds"],
                                        base["input_tokens"] / base["seconds"], base["seconds"] / args.steps)}
    for workers, (r, _) in runs.items():
        steady = r.seconds - r.epoch_start_seconds  # without Ray Data's start-up wait for the first batch
        for name, sec in ((f"ray, {workers} worker(s)", r.seconds), ("  same, steady state", steady)):
            rates[f"{name} [{workers}]"] = (r.samples / sec, r.tokens / sec, r.input_tokens / sec, sec / r.steps)
    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(init_dir).parameters())
    print(f"\nmodel {params / 1e6:.2f}M params, {args.steps} steps, global batch {args.global_batch}, "
          f"ZeRO-{args.zero_stage}")
    print(f"{'':34}{'samples/s':>12}{'target tok/s':>14}{'input tok/s':>13}{'s/step':>9}{'ratio tok/s':>13}")
    plain = rates["plain torch, 1 process"]
    for name, row in rates.items():
        print(f"{name:34}{row[0]:12.1f}{row[1]:14.1f}{row[2]:13.1f}{row[3]:9.3f}{row[1] / plain[1]:13.2f}")
    print(f"loss first -> last: plain {base['first_loss']:.3f} -> {base['last_loss']:.3f}, " + ", ".join(
        f"ray[{w}] {r.loss_history[0]:.3f} -> {r.loss_history[-1]:.3f}" for w, (r, _) in runs.items()))
    for workers, (r, _) in runs.items():
        print(f"ray[{workers}]: loop {r.seconds:.1f} s (first batch {r.epoch_start_seconds:.1f} s, later batches "
              f"+ tokenizing {r.data_seconds:.1f} s), setup {r.setup_seconds:.1f} s, fit() wall "
              f"{r.wall_seconds:.1f} s, rank-0 peak RSS {r.peak_rss_mb:.0f} MiB")


if __name__ == "__main__":
    main()
