"""PanGu-Coder's two-stage objective, measured on a small student (``python -m distill_ray.train.pangu``).

The same cut SmolLM2 student trained for the same number of optimizer steps three ways:

- ``sft``: sft on problem/solution pairs for every step (one phase: a plain run);
- ``clm -> sft``: causal LM on raw code (standard-library source) for the first steps, then sft on the pairs;
- ``clm -> sft + mlm``: the same, with span infilling (``mlm``) beside sft in the second phase (PanGu-Coder).

The pairs are the built-in puzzles' train problems with their reference solutions (the zero-shot prompt a
student sees, the solution it must write: no teacher needed), so the run is minutes on a CPU. Held-out: the
NLL per token of the eval puzzles' reference solutions (the task), of unseen standard-library code (stage 1's
domain) and of the eval solutions' masked spans (what mlm trains). One seed.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from distill_ray.train.config import TrainSettings

ARMS = {
    "sft": None,
    "clm -> sft": {"sft": 1.0},
    "clm -> sft + mlm": {"sft": 1.0, "mlm": 1.0},
}


def pair_rows(problems: list[dict], tokenizer_dir: str) -> list[dict]:
    """(zero-shot prompt, reference solution) rows, as the training pipeline renders a kept candidate."""
    import pandas as pd

    from distill_ray.workflow import student_rows

    frame = pd.DataFrame({"task_id": [p["task_id"] for p in problems], "kind": [p["kind"] for p in problems],
                          "question": [p["question"] for p in problems],
                          "program": [p["reference"] for p in problems]})
    return student_rows(frame, tokenizer_dir).to_dict("records")


def held_out_nll(model_dir: str, rows: list[dict], objective: str, max_length: int, seed: int = 0) -> float:
    """NLL per target token of ``rows`` under ``objective`` (sft: the targets; mlm: seeded masked spans)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model_nll(model, tokenizer, rows, objective, max_length, seed)


def model_nll(model, tokenizer, rows: list[dict], objective: str, max_length: int, seed: int = 0) -> float:
    """``held_out_nll`` of a loaded model (an int8 one, say)."""
    import torch

    from distill_ray.train.batch import make_batch
    from distill_ray.train.objectives import Objective

    term = Objective({objective: 1.0})
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), 8):
            chunk = rows[start:start + 8]
            columns = {k: [r[k] for r in chunk] for k in ("prompt_text", "target_text")}
            batch = make_batch(columns, tokenizer, max_length, tokenizer.pad_token_id, term.needs,
                               random.Random(f"{seed}-{start}"))
            out = term(model, batch)
            total += out.total
            tokens += out.tokens
    return total / max(tokens, 1)


def run(out: Path, layers: int, steps: int, code_steps: int, num_train: int, num_eval: int, seed: int,
        lr: float, batch_size: int) -> dict:
    import ray

    from distill_ray.models import resolve_model
    from distill_ray.tasks.puzzles import load_puzzles
    from distill_ray.train import build_student, train_student
    from distill_ray.train.heal import general_text_rows

    out.mkdir(parents=True, exist_ok=True)
    full = resolve_model("smollm2")
    student = build_student(full, out / "student_cut", num_layers=layers)
    train, evals = load_puzzles(num_train=num_train, num_eval=num_eval, seed=seed)
    pairs, held_pairs = pair_rows(train, str(student)), pair_rows(evals, str(student))
    held_code = general_text_rows(32, chars=400, seed=seed + 9999)
    common = dict(workers=1, zero_stage=0, batch_size=batch_size, lr=lr, seed=seed, log_every=10, max_length=256,
                  tensorboard=False, torch_threads=2, cpus_per_worker=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    results = {"setup": {"layers": layers, "steps": steps, "code_steps": code_steps, "train_pairs": len(pairs),
                         "eval_pairs": len(held_pairs), "lr": lr, "batch_size": batch_size, "seed": seed}}
    for arm, second in ARMS.items():
        if second is None:
            settings = TrainSettings(**common, objectives={"sft": 1.0}, max_steps=steps, epochs=100)
        else:
            settings = TrainSettings(**common, stages=[
                {"name": "clm", "data": "raw_code", "objectives": {"sft": 1.0}, "max_steps": code_steps},
                {"name": "pairs", "objectives": second, "max_steps": steps - code_steps, "epochs": 100}])
        result = train_student(student, ray.data.from_items(pairs), out / arm.replace(" ", "").replace(">", ""),
                               settings)
        results[arm] = {"steps": result.steps, "seconds": round(result.seconds, 1),
                        "nll_solutions": held_out_nll(result.output_dir, held_pairs, "sft", 256),
                        "nll_code": held_out_nll(result.output_dir, held_code, "sft", 256),
                        "nll_infill": held_out_nll(result.output_dir, held_pairs, "mlm", 256, seed)}
        print(arm, results[arm], flush=True)
    results["untrained"] = {"nll_solutions": held_out_nll(str(student), held_pairs, "sft", 256),
                            "nll_code": held_out_nll(str(student), held_code, "sft", 256),
                            "nll_infill": held_out_nll(str(student), held_pairs, "mlm", 256, seed)}
    (out / "pangu.json").write_text(json.dumps(results, indent=2))
    return results


def run_arguments(description: str, out: str, layers: int, steps: int) -> argparse.ArgumentParser:
    """The command line every small run of a cut SmolLM2 on puzzle pairs shares (this one, ``moe_run``): where to
    write, the student's layers, the steps of every arm, the puzzles and the optimizer."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=out)
    parser.add_argument("--layers", type=int, default=layers, help="the student: SmolLM2 cut to this many layers")
    parser.add_argument("--steps", type=int, default=steps, help="optimizer steps of every arm")
    parser.add_argument("--num-train", type=int, default=160)
    parser.add_argument("--num-eval", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main() -> None:
    parser = run_arguments(__doc__.split("\n\n")[0], "outputs/pangu", layers=8, steps=40)
    parser.add_argument("--code-steps", type=int, default=15, help="of them, causal LM on raw code (stage 1)")
    args = parser.parse_args()
    results = run(Path(args.out), args.layers, args.steps, args.code_steps, args.num_train, args.num_eval,
                  args.seed, args.lr, args.batch_size)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
