"""Training throughput: ``train_student`` (Ray Train + DeepSpeed) with 1 and 2 workers vs a plain
single-process torch loop, on the same model, rows and global batch, in one run.

Every run takes the same optimizer steps over the same global batch (split over the workers), with the same
tokenization, loss and optimizer; the plain loop takes the 1-worker run's batches in the 1-worker run's order
(the trainer's seeded split order and shuffle), so the two take the loss along the same path.

Like for like:

- Threads: the plain loop is timed with 1 and with ``--threads`` torch threads and the faster count (``T``)
  counts; the 1-worker runs then use ``T`` threads too, ``W`` workers ``max(1, T // W)`` each.
- Priority: Ray starts its worker processes at a lower priority (``nice`` 15) than the driver. On a machine
  other jobs load, that alone slows the trainer against a loop in the driver. The plain loop runs in a Ray
  task (one Ray worker process, the same niceness, no Ray Train, no DeepSpeed, no Ray Data); the same loop in
  the driver (nice 0) is printed beside it.
- ZeRO: each ``--zero-stages`` stage is measured (default 0 and 2; on one worker ZeRO-0 is plain data
  parallel: no gradient buckets or flat partitions to copy into).

Prints samples/s and tokens/s (target tokens, and all non-padding tokens) and the ratios against the
baseline, over the whole loop and in steady state: the median step time times the steps, on both sides (a
median that bursts of other jobs' load, and Ray Data's wait for the first batch, hardly move).

    python benchmarks/train_throughput.py --steps 20 --workers 1 2 --zero-stages 0 2
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
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


def trainer_order(rows: list[dict], settings) -> list[dict]:
    """``rows`` in the order a 1-worker ``train_student`` run reads them in its first epoch: sorted on the
    seeded hash of ``split_for_workers``, then each shuffle chunk permuted as ``loop._epoch_batches`` does."""
    import pandas as pd

    from distill_ray.train.trainer import ORDER_COLUMN, _order_key

    frame = _order_key(pd.DataFrame(rows), seed=settings.seed).sort_values(ORDER_COLUMN, kind="stable")
    ordered = frame.drop(columns=[ORDER_COLUMN]).to_dict("records")
    size = settings.batch_size
    chunk_rows = max(1, settings.shuffle_buffer // size) * size if settings.shuffle_buffer else size
    rng = random.Random(f"shuffle-{settings.seed}-0-0")
    out = []
    for start in range(0, len(ordered), chunk_rows):
        chunk = ordered[start:start + chunk_rows]
        order = rng.sample(range(len(chunk)), len(chunk)) if settings.shuffle_buffer else range(len(chunk))
        out += [chunk[i] for i in order]
    return out


def baseline(init_dir: Path, rows: list[dict], steps: int, batch_size: int, settings, threads: int | None = None,
             seed: int = 0) -> dict:
    """The same work in one process: AdamW, clipping, the same collate and loss; no Ray, no DeepSpeed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill_ray.train.data import collate, tokenize_rows
    from distill_ray.train.objectives import sft_loss

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(init_dir)
    model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)
    model.config.use_cache = False   # as the trainer
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    samples = tokens = input_tokens = 0
    losses, step_seconds = [], []
    started = time.perf_counter()
    for step in range(steps):
        step_started = time.perf_counter()
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
        losses.append(out.loss.detach())
        samples += len(chunk)
        tokens += out.tokens
        input_tokens += int(batch["attention_mask"].sum())
        step_seconds.append(time.perf_counter() - step_started)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "samples": samples, "tokens": tokens, "input_tokens": input_tokens,
            "median_step": statistics.median(step_seconds),
            "first_loss": float(losses[0]), "last_loss": float(losses[-1]), "threads": torch.get_num_threads(),
            "nice": os.nice(0)}


def baseline_in_ray(init_dir: Path, rows: list[dict], steps: int, batch_size: int, settings, threads: int) -> dict:
    """``baseline`` in a Ray task on this node: a Ray worker process, at the priority Ray gives its workers."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0.5, scheduling_strategy=NodeAffinitySchedulingStrategy(
        ray.get_runtime_context().get_node_id(), soft=False))(baseline)
    return ray.get(task.remote(init_dir, rows, steps, batch_size, settings, threads))


def ray_run(init_dir: Path, data: Path, work: Path, workers: int, zero_stage: int, threads: int, args) -> tuple:
    from distill_ray.train import train_student

    settings = train_settings(args, workers, zero_stage, threads)
    result = train_student(init_dir, data, work / f"student-{workers}-z{zero_stage}", settings)
    return result, settings


def steady_seconds(result) -> float:
    """A run's steady-state loop time: its median step time times its steps."""
    return statistics.median(result.step_seconds) * result.steps


def train_settings(args, workers: int = 1, zero_stage: int = 2, threads: int | None = None):
    from distill_ray.train import TrainSettings

    return TrainSettings(workers=workers, cpus_per_worker=min(0.5, 1.6 / workers), zero_stage=zero_stage,
                         batch_size=args.global_batch // workers, lr=1e-3, max_steps=args.steps, epochs=1,
                         log_every=0, torch_threads=threads)


def measure(quick: bool = False) -> list[dict]:
    """One repetition for `distill-ray bench`: steady-state tokens/s and samples/s through Ray Train + DeepSpeed
    (ZeRO-0 and ZeRO-2) with 1 and 2 workers, against the plain single-process loop on the same model and
    batches, at the same thread count and process priority."""
    args = parser().parse_args(["--steps", "10" if quick else "20"])
    init_dir, runs, base = run(args)
    rows = []
    for (workers, zero), (r, settings, base) in runs.items():
        steady, plain_steady = steady_seconds(r), base["median_step"] * args.steps
        for unit, ours, plain in (("target tokens/s", r.tokens / steady, base["tokens"] / plain_steady),
                                  ("samples/s", r.samples / steady, base["samples"] / plain_steady)):
            rows.append({"stage": "train", "case": f"tiny Llama, ZeRO-{zero}, {unit.split('/')[0]}",
                         "unit": unit, "workers": workers, "ours": ours, "baseline": plain,
                         "baseline_name": f"plain PyTorch loop, 1 process, {base['threads']} thread(s), "
                                          f"nice {base['nice']} as Ray's workers"})
    return rows


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--global-batch", type=int, default=8, help="rows per optimizer step, all workers")
    parser.add_argument("--zero-stages", type=int, nargs="+", default=[0, 2], choices=[0, 1, 2, 3])
    parser.add_argument("--threads", type=int, default=2,
                        help="most torch threads tried (the plain loop is timed at 1 and this many)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--init-dir", help="train this HF student instead of a tiny one built from config")
    return parser


def main() -> None:
    args = parser().parse_args()
    init_dir, runs, base = run(args)
    report(init_dir, runs, base, args)


def run(args) -> tuple[Path, dict, dict]:
    """(student dir, {(workers, zero stage): (TrainResult, settings, its baseline)}, the fastest baseline;
    each run's baseline is the faster of the plain loop timed right before and right after it, at the workers'
    priority; ``base["driver"]``: the same loop in the driver)."""
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
    settings = train_settings(args, 1)
    ordered = trainer_order(rows, settings)   # the 1-worker run's batches, in its order

    def plain(threads: int) -> dict:
        result = baseline_in_ray(init_dir, ordered, args.steps, args.global_batch, settings, threads)
        print(f"plain torch in a Ray task (nice {result['nice']}), {threads} thread(s): "
              f"{result['seconds'] / args.steps:.3f} s/step, median {result['median_step']:.3f}", flush=True)
        return result

    bases = [plain(threads) for threads in sorted({1, args.threads})]
    threads = min(bases, key=lambda b: b["median_step"])["threads"]
    runs = {}
    for zero in args.zero_stages:
        for w in args.workers:
            # Other jobs' load drifts: each run gets its own baseline, timed right before and right after it.
            before = plain(threads)
            result = ray_run(init_dir, work / "data", work, w, zero, max(1, threads // w), args)
            runs[(w, zero)] = (*result, min(before, plain(threads), key=lambda b: b["median_step"]))
    base = min((b for *_, b in runs.values()), key=lambda b: b["median_step"])
    base["driver"] = baseline(init_dir, ordered, args.steps, args.global_batch, settings, threads)
    print(f"plain torch in the driver (nice {base['driver']['nice']}), {threads} thread(s): "
          f"{base['driver']['seconds'] / args.steps:.3f} s/step, median {base['driver']['median_step']:.3f}",
          flush=True)
    return init_dir, runs, base


def report(init_dir: Path, runs: dict, base: dict, args) -> None:
    from transformers import AutoModelForCausalLM

    def rates(r) -> tuple:   # the plain loop: whole loop, and median step x steps
        return tuple((r["samples"] / sec, r["tokens"] / sec, r["input_tokens"] / sec, sec / args.steps)
                     for sec in (r["seconds"], r["median_step"] * args.steps))

    table = {}
    for name, r in ((f"plain torch, Ray task, nice {base['nice']} (fastest)", base),
                    (f"plain torch, driver, nice {base['driver']['nice']}", base["driver"])):
        table[name], table[f"  same, steady state [{name}]"] = (*rates(r)[0], None), (*rates(r)[1], None)
    for (workers, zero), (r, settings, own) in runs.items():
        own_rate = own["tokens"] / (own["median_step"] * args.steps)
        table[f"  plain torch steady, just before/after [{workers}, {zero}]"] = (*rates(own)[1], None)
        for name, sec in ((f"ray ZeRO-{zero}, {workers} worker(s) x {settings.torch_threads} thr", r.seconds),
                          ("  same, steady state", steady_seconds(r))):
            table[f"{name} [{workers}, {zero}]"] = (r.samples / sec, r.tokens / sec, r.input_tokens / sec,
                                                    sec / r.steps, r.tokens / sec / own_rate)
    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(init_dir).parameters())
    print(f"\nmodel {params / 1e6:.2f}M params, {args.steps} steps, global batch {args.global_batch}, "
          f"plain loop {base['threads']} thread(s), load average {os.getloadavg()[0]:.1f}")
    print(f"{'':46}{'samples/s':>10}{'target tok/s':>14}{'input tok/s':>13}{'s/step':>8}{'ratio':>7}"
          f"{'vs fastest':>11}{'vs driver':>10}")
    fastest = base["tokens"] / (base["median_step"] * args.steps)
    driver = base["driver"]["tokens"] / (base["driver"]["median_step"] * args.steps)
    for name, row in table.items():
        own = f"{row[4]:7.2f}" if row[4] is not None else f"{'':7}"
        print(f"{name.split(' [plain')[0]:46}{row[0]:10.1f}{row[1]:14.1f}{row[2]:13.1f}{row[3]:8.3f}{own}"
              f"{row[1] / fastest:11.2f}{row[1] / driver:10.2f}")
    print("ratio: target tokens/s against the plain loop's steady state timed just before/after the run (the "
          "faster of the two), at the same thread count and priority; vs fastest / vs driver: against the "
          "fastest steady state of the plain loop in a Ray task / in the driver")
    print(f"loss first -> last: plain {base['first_loss']:.3f} -> {base['last_loss']:.3f}, " + ", ".join(
        f"ray[{w} w, ZeRO-{z}] {r.loss_history[0]:.3f} -> {r.loss_history[-1]:.3f}"
        for (w, z), (r, *_) in runs.items()))
    for (workers, zero), (r, *_) in runs.items():
        print(f"ray[{workers} w, ZeRO-{zero}]: loop {r.seconds:.1f} s (first batch {r.epoch_start_seconds:.1f} s, "
              f"later batches + tokenizing {r.data_seconds:.1f} s), setup {r.setup_seconds:.1f} s, fit() wall "
              f"{r.wall_seconds:.1f} s, rank-0 peak RSS {r.peak_rss_mb:.0f} MiB")


if __name__ == "__main__":
    main()
