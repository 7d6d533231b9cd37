"""On-policy distillation steps/s: the overlapped loop (the next step's rollouts are sampled, scored and judged
while this step trains) against the same loop strictly in turn (``on_policy.overlap: false``: sample, score,
judge, train, push), same tiny student and teacher, problems, seeds and steps, in one run; plus where a step's
time goes (mean seconds per step of each part, from the run's own history).

    python benchmarks/on_policy_throughput.py [--steps 8] [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup(work: Path) -> tuple[list, list[dict]]:
    """A tiny random student and teacher with SmolLM2's tokenizer, and puzzle problems."""
    from transformers import AutoTokenizer

    from distill_ray.config import PromptConfig
    from distill_ray.models import resolve_model
    from distill_ray.onpolicy.problems import on_policy_problems
    from distill_ray.prompts import exemplar_pool
    from distill_ray.tasks import load_problems
    from distill_ray.train import build_student_from_config

    dirs = [build_student_from_config(resolve_model("smollm2"), work / name, hidden_size=64, num_layers=2,
                                      num_heads=2, num_kv_heads=1, seed=seed)
            for name, seed in (("student", 0), ("teacher", 1))]
    tokenizer = AutoTokenizer.from_pretrained(dirs[0])
    train, _ = load_problems("puzzles", num_train=24, num_eval=1, seed=0)
    problems = on_policy_problems(train[4:], exemplar_pool(train[:4]), tokenizer, [tokenizer],
                                  PromptConfig(num_shots=2), seed=0)
    return dirs, problems


def run_loop(dirs: list, problems: list[dict], work: Path, steps: int, overlap: bool):
    from distill_ray.config import OnPolicyConfig
    from distill_ray.onpolicy import ScoringTeacher, train_on_policy
    from distill_ray.train import TrainSettings

    op = OnPolicyConfig(steps=steps, prompts_per_step=4, samples=2, max_new_tokens=24, overlap=overlap)
    settings = TrainSettings(workers=2, lr=1e-3, max_length=384, log_every=0,
                             run_name=f"on-policy-{'overlap' if overlap else 'sequential'}-{time.time_ns()}")
    name = "overlap" if overlap else "sequential"
    return train_on_policy(dirs[0], problems, [ScoringTeacher("t", str(dirs[1]))], work / name, settings, op)


def time_split(result) -> dict:
    """Mean seconds per step of each part, over the steps after the first (the first has no overlap to show)."""
    from distill_ray.onpolicy.loop import STEP_PARTS

    later = result.history[1:] or result.history
    return {part: sum(h[part] for h in later) / len(later) for part in STEP_PARTS}


def measure(quick: bool = False, steps: int | None = None) -> list[dict]:
    import ray

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    work = Path(tempfile.mkdtemp(prefix="bench-on-policy-"))
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(work / "ray"))
    dirs, problems = setup(work)
    steps = steps or (4 if quick else 10)
    results = {overlap: run_loop(dirs, problems, work, steps, overlap) for overlap in (True, False)}
    # Steps after the first (which waits for its rollouts either way), by the loop's own wall clock.
    rate = {overlap: (r.steps - 1) / sum(h["step_s"] for h in r.history[1:]) for overlap, r in results.items()}
    split = time_split(results[True])
    case = f"tiny llama, 2 workers x 4 problems x 2 samples, {steps} steps"
    return [{"stage": "on_policy", "case": case, "unit": "steps/s", "workers": 2, "ours": rate[True],
             "baseline": rate[False], "baseline_name": "the same loop in turn (overlap: false)",
             "split": split, "staleness": [h["staleness"] for h in results[True].history]}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for row in measure(args.quick, None if args.quick else args.steps):
        print(f"{row['case']}: overlapped {row['ours']:.3f} {row['unit']} | {row['baseline_name']} "
              f"{row['baseline']:.3f} | ratio {row['ours'] / row['baseline']:.2f}x")
        print("mean seconds per step (overlapped): " + ", ".join(f"{k} {v:.2f}" for k, v in row["split"].items()))
        print(f"staleness per step: {row['staleness']}")


if __name__ == "__main__":
    main()
