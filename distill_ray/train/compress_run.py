"""Sparse + quantized students, measured on a small student (``python -m distill_ray.train.compress_run``).

A cut SmolLM2 student is first trained dense (sft on the built-in puzzles' problem/solution pairs, as in
``pangu.py``): the dense student, and the teacher of what follows. From it, every arm trains the same further
optimizer steps on the same rows:

- ``dense``: sft continued (the reference at equal steps);
- ``pruned sft``: magnitude pruning to ``sparsity`` on the cubic schedule, sft alone (no teacher);
- ``pruned kd``: the same pruning with sft + kd from the dense student (the teacher's signal heals);
- ``pruned kd + QAT``: the same, its last ``qat_steps`` int8 QAT, exported int8.

Two more cost no training: the dense student pruned at once (one-shot, not healed) and ``pruned kd`` quantized
after training (PTQ int8, no QAT). Each is scored by the NLL per token of the held-out eval puzzles' reference
solutions; the deployable ones also by size on disk (raw and gzip-compressed: unstructured zeros only shrink
a compressed file) and CPU decode speed (batch 1, greedy, ``new_tokens`` per prompt; the models take turns
in each round, so a burst of other jobs' load hits all of them, and the ratio to dense is what to read).
One seed.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from distill_ray.config import CompressConfig
from distill_ray.train.config import TrainSettings


def compressed_mb(model_dir: str | Path) -> float:
    """Size of the directory's weight files gzip-compressed (level 1), in MB."""
    total = 0
    for path in Path(model_dir).glob("*.safetensors"):
        with open(path, "rb") as src, open(os.devnull, "wb") as sink:
            counter = _Counter(sink)
            with gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=1) as zipped:
                shutil.copyfileobj(src, zipped, 1 << 22)
            total += counter.bytes
    return total / 1e6


class _Counter:
    """A write-only file that counts what it is given."""

    def __init__(self, sink):
        self.sink, self.bytes = sink, 0

    def write(self, data) -> int:
        self.bytes += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def decode_rates(models: dict, tokenizer, prompts: list[str], new_tokens: int, rounds: int) -> dict[str, float]:
    """Median greedy decode tokens/s of each model over ``rounds``, the models taking turns within a round."""
    import torch

    encoded = [tokenizer(p, return_tensors="pt")["input_ids"] for p in prompts]
    seconds = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(rounds):
            for name, model in models.items():
                started = time.perf_counter()
                for ids in encoded:
                    model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
                seconds[name].append(time.perf_counter() - started)
    return {name: len(prompts) * new_tokens / statistics.median(times) for name, times in seconds.items()}


def one_shot_pruned(model_dir: str, sparsity: float):
    """The model of ``model_dir`` pruned to ``sparsity`` at once (no training after)."""
    import torch
    from transformers import AutoModelForCausalLM

    from distill_ray.train.compress import Compressor

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    Compressor(CompressConfig(sparsity=sparsity, prune_steps=1), model, total_steps=1).sync(1)
    return model


def _sparsity(model) -> float:
    """Share of zeros in the decoder's weight matrices, float or int8 (where rounding zeroes more)."""
    from distill_ray.train.compress import compressible_linears, model_sparsity
    from distill_ray.train.int8 import int8_linears

    return model_sparsity(compressible_linears(model) or int8_linears(model))


def train_arms(dense_dir: str, pairs: list[dict], out: Path, common: dict, compress: dict) -> dict:
    """The arms trained from the dense student: arm -> TrainResult."""
    import ray.data

    from distill_ray.train import train_student

    kd = {"objectives": {"sft": 1.0, "kd": 1.0}, "teacher_dir": dense_dir}
    prune = {"sparsity": compress["sparsity"], "prune_steps": compress["prune_steps"]}
    arms = {
        "dense": {},
        "pruned sft": {"compress": prune},
        "pruned kd": {**kd, "compress": prune},
        "pruned kd + QAT": {**kd, "compress": {**prune, "qat_steps": compress["qat_steps"], "export_int8": True}},
    }
    results = {}
    for arm, extra in arms.items():
        settings = TrainSettings(**{**common, **extra})
        results[arm] = train_student(dense_dir, ray.data.from_items(pairs), out / arm.replace(" ", "_"), settings)
        print(arm, "trained in", round(results[arm].seconds), "s", flush=True)
    return results


def run(out: Path, layers: int, dense_steps: int, steps: int, sparsity: float, prune_steps: int, qat_steps: int,
        num_train: int, num_eval: int, seed: int, lr: float, batch_size: int, new_tokens: int, rounds: int) -> dict:
    import ray
    import torch

    from distill_ray.models import resolve_model
    from distill_ray.tasks.puzzles import load_puzzles
    from distill_ray.train import build_student, train_student
    from distill_ray.train.pangu import pair_rows

    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    student = build_student(resolve_model("smollm2"), out / "student_cut", num_layers=layers)
    train, evals = load_puzzles(num_train=num_train, num_eval=num_eval, seed=seed)
    pairs, held_pairs = pair_rows(train, str(student)), pair_rows(evals, str(student))
    common = dict(workers=1, zero_stage=0, batch_size=batch_size, lr=lr, seed=seed, log_every=10, max_length=256,
                  tensorboard=False, torch_threads=2, cpus_per_worker=1, objectives={"sft": 1.0}, epochs=100)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    dense = train_student(student, ray.data.from_items(pairs), out / "dense_start",
                          TrainSettings(**common, max_steps=dense_steps))
    trained = train_arms(dense.output_dir, pairs, out, {**common, "max_steps": steps},
                         {"sparsity": sparsity, "prune_steps": prune_steps, "qat_steps": qat_steps})
    rows, models, tokenizer = score(dense, trained, held_pairs, sparsity)
    load_before = os.getloadavg()
    rates = decode_rates(models, tokenizer, [p["prompt_text"] for p in held_pairs[:4]], new_tokens, rounds)
    for name, rate in rates.items():
        rows[name].update(tokens_per_s=rate, speed_vs_dense=rate / rates["dense"])
    full = full_size(resolve_model("smollm2"), out / "full", held_pairs, sparsity, new_tokens, rounds)
    results = {"setup": {"layers": layers, "dense_steps": dense_steps, "steps": steps, "sparsity": sparsity,
                         "prune_steps": prune_steps, "qat_steps": qat_steps, "train_pairs": len(pairs),
                         "eval_pairs": len(held_pairs), "lr": lr, "batch_size": batch_size, "seed": seed,
                         "new_tokens": new_tokens, "rounds": rounds,
                         "load_average_during_latency": [load_before, os.getloadavg()]},
               "rows": rows, "full_size": full}
    (out / "compress.json").write_text(json.dumps(results, indent=2))
    return results


def score(dense, trained: dict, held_pairs: list[dict], sparsity: float):
    """Held-out NLL (and sparsity, size) of every student; the deployable ones loaded for timing."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill_ray.train.int8 import INT8_DIR, directory_mb, export_int8, load_int8
    from distill_ray.train.pangu import model_nll

    tokenizer = AutoTokenizer.from_pretrained(dense.output_dir)
    nll = lambda model: model_nll(model, tokenizer, held_pairs, "sft", 256)   # noqa: E731
    load = lambda d: AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()   # noqa: E731
    rows = {"dense start": {"steps": dense.steps, "nll": nll(load(dense.output_dir))},
            "one-shot pruned (no healing)": {"steps": dense.steps,
                                             "nll": nll(one_shot_pruned(dense.output_dir, sparsity))}}
    ptq_dir = Path(trained["pruned kd"].output_dir) / INT8_DIR
    export_int8(trained["pruned kd"].output_dir, ptq_dir)
    int8_dir = Path(trained["pruned kd + QAT"].output_dir) / INT8_DIR
    # The QAT arm is deployed as int8; its fp32 weights are only QAT's latent copy.
    deployed = {arm: (result.output_dir, trained[arm], load(result.output_dir)) for arm, result in trained.items()
                if arm != "pruned kd + QAT"}
    deployed["pruned kd, PTQ int8"] = (ptq_dir, trained["pruned kd"], load_int8(ptq_dir))
    deployed["pruned kd + QAT, int8"] = (int8_dir, trained["pruned kd + QAT"], load_int8(int8_dir))
    for name, (directory, result, model) in deployed.items():
        rows[name] = {"steps": dense.steps + result.steps, "seconds": round(result.seconds, 1), "nll": nll(model),
                      "sparsity": _sparsity(model), "mb": directory_mb(directory), "gzip_mb": compressed_mb(directory)}
    models = {name: deployed[name][2] for name in ("dense", "pruned kd", "pruned kd + QAT, int8")}
    return rows, models, tokenizer


def full_size(model_dir: str, out: Path, held_pairs: list[dict], sparsity: float, new_tokens: int,
              rounds: int) -> dict:
    """Size and speed where the decoder is most of the model: the whole SmolLM2-135M, dense, pruned at once
    (one-shot, no training: too slow to train here) and that pruned model as int8 (PTQ)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill_ray.train.int8 import directory_mb, export_int8, load_int8
    from distill_ray.train.pangu import model_nll

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pruned = one_shot_pruned(model_dir, sparsity)
    pruned.save_pretrained(out / "pruned")
    tokenizer.save_pretrained(out / "pruned")
    export_int8(out / "pruned", out / "int8")
    models = {"SmolLM2-135M dense": AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval(),
              "one-shot pruned": pruned, "one-shot pruned, PTQ int8": load_int8(out / "int8")}
    dirs = [model_dir, out / "pruned", out / "int8"]
    rows = {name: {"steps": 0, "nll": model_nll(model, tokenizer, held_pairs, "sft", 256),
                   "sparsity": _sparsity(model), "mb": directory_mb(d), "gzip_mb": compressed_mb(d)}
            for (name, model), d in zip(models.items(), dirs)}
    rates = decode_rates(models, tokenizer, [p["prompt_text"] for p in held_pairs[:4]], new_tokens, rounds)
    dense = rates["SmolLM2-135M dense"]
    for name, rate in rates.items():
        rows[name].update(tokens_per_s=rate, speed_vs_dense=rate / dense)
    return rows


def table(rows: dict) -> str:
    """The README's table of one run's ``rows`` (or ``full_size``)."""
    lines = ["| student | steps | sparsity | MB on disk (gzip) | held-out NLL | decode tokens/s (x dense) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        size = f"{row['mb']:.0f}" + (f" ({row['gzip_mb']:.0f})" if "gzip_mb" in row else "") if "mb" in row else ""
        speed = f"{row['tokens_per_s']:.1f} ({row['speed_vs_dense']:.2f}x)" if "tokens_per_s" in row else ""
        sparsity = f"{row['sparsity']:.2f}" if "sparsity" in row else ""
        lines.append(f"| {name} | {row['steps']} | {sparsity} | {size} | {row['nll']:.3f} | {speed} |")
    return "\n".join(lines)


def main() -> None:
    from distill_ray.train.pangu import run_arguments

    parser = run_arguments(__doc__.split("\n\n")[0], "outputs/compress", layers=4, steps=12)
    parser.add_argument("--dense-steps", type=int, default=12, help="sft steps of the dense student (the teacher)")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--prune-steps", type=int, default=6, help="of --steps, the cubic ramp to the sparsity")
    parser.add_argument("--qat-steps", type=int, default=3, help="of --steps, the last ones int8 QAT (its arm)")
    parser.add_argument("--new-tokens", type=int, default=16, help="decoded per prompt when timing")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (the median is reported)")
    args = parser.parse_args()
    results = run(Path(args.out), args.layers, args.dense_steps, args.steps, args.sparsity, args.prune_steps,
                  args.qat_steps, args.num_train, args.num_eval, args.seed, args.lr, args.batch_size,
                  args.new_tokens, args.rounds)
    print(json.dumps(results, indent=2))
    print(table(results["rows"]))
    print(table(results["full_size"]))


if __name__ == "__main__":
    main()
