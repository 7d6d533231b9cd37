"""Training throughput: ``train_student`` (Ray Train + DeepSpeed) vs a plain single-process torch loop.

Both train the same tiny student (a random llama with the real SmolLM2 tokenizer) on the same rows for the
same number of optimizer steps with the same global batch, tokenization, loss and optimizer, in one run.
The baseline gets as many torch threads as the Ray workers have in total (one each), so both use the same
cores. Prints samples/s and tokens/s (target tokens, and all non-padding tokens) and the ratios.

    python benchmarks/bench_train.py --steps 20 --workers 2
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="per-worker micro-batch")
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--init-dir", help="train this HF student instead of a tiny one built from config")
    args = parser.parse_args()

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    import ray

    from distill_ray.models import resolve_model
    from distill_ray.train import TrainSettings, build_student_from_config, train_student

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    init_dir = Path(args.init_dir) if args.init_dir else build_student_from_config(
        resolve_model("smollm2"), work / "init", hidden_size=args.hidden, num_layers=args.layers)
    rows = make_rows(args.steps * args.batch_size * args.workers)
    settings = TrainSettings(num_workers=args.workers, cpus_per_worker=min(0.5, 1.6 / args.workers),
                             zero_stage=args.zero_stage, batch_size=args.batch_size, lr=1e-3,
                             max_steps=args.steps, epochs=1, log_every=0)

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), num_cpus=None if os.environ.get("RAY_ADDRESS") else 2,
                 include_dashboard=False, log_to_driver=False, _temp_dir=str(work / "ray"))
    # The pipeline hands training a Parquet directory: go through the same path.
    import pandas as pd

    (work / "data").mkdir()
    pd.DataFrame(rows).to_parquet(work / "data" / "part-0.parquet")
    ray_result = train_student(init_dir, work / "data", work / "student", settings)

    # The Ray workers run one torch thread each: give the baseline as many, and also try one thread (on a
    # shared, oversubscribed machine multi-threaded torch can be far slower); keep the faster.
    bases = {}
    for threads in sorted({1, args.workers}):
        torch.set_num_threads(threads)
        bases[threads] = baseline(init_dir, rows, args.steps, args.batch_size * args.workers, settings)
        print(f"plain torch with {threads} thread(s): {bases[threads]['seconds'] / args.steps:.3f} s/step")
    base = min(bases.values(), key=lambda b: b["seconds"])

    steady = ray_result.seconds - ray_result.epoch_start_seconds  # without Ray Data's start-up wait
    runs = {
        "ray train + deepspeed": (ray_result.seconds, ray_result),
        "  same, steady state": (steady, ray_result),
    }
    rates = {name: (r.samples / sec, r.tokens / sec, r.input_tokens / sec, sec / r.steps)
             for name, (sec, r) in runs.items()}
    rates["plain torch, 1 process"] = (base["samples"] / base["seconds"], base["tokens"] / base["seconds"],
                                       base["input_tokens"] / base["seconds"], base["seconds"] / args.steps)
    from transformers import AutoModelForCausalLM

    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(init_dir).parameters())
    print(f"\nmodel {params / 1e6:.2f}M params, {args.steps} steps, global batch {args.batch_size * args.workers}, "
          f"{args.workers} workers, ZeRO-{args.zero_stage}")
    print(f"{'':28}{'samples/s':>12}{'target tok/s':>14}{'input tok/s':>13}{'s/step':>9}")
    for name, row in rates.items():
        print(f"{name:28}{row[0]:12.1f}{row[1]:14.1f}{row[2]:13.1f}{row[3]:9.3f}")
    plain = rates["plain torch, 1 process"]
    for name in runs:
        ratio = [a / b for a, b in zip(rates[name][:3], plain[:3])]
        print(f"{'ratio ' + name.strip() + ' / plain':40}{ratio[0]:6.2f} (samples/s) {ratio[1]:6.2f} (tokens/s)")
    print(f"loss first -> last: ray {ray_result.loss_history[0]:.3f} -> {ray_result.loss_history[-1]:.3f}, "
          f"plain {base['first_loss']:.3f} -> {base['last_loss']:.3f}")
    print(f"ray: loop {ray_result.seconds:.1f} s, of which waiting for the first batch "
          f"{ray_result.epoch_start_seconds:.1f} s and for later batches + tokenizing {ray_result.data_seconds:.1f} s")
    print(f"ray: setup (model load + deepspeed.initialize) {ray_result.setup_seconds:.1f} s, "
          f"fit() wall {ray_result.wall_seconds:.1f} s, rank-0 peak RSS {ray_result.peak_rss_mb:.0f} MiB")


if __name__ == "__main__":
    main()
