"""On-policy distillation steps/s: the overlapped loop (the next step's rollouts are sampled, scored and judged
while this step trains) against the same loop strictly in turn (``on_policy.overlap: false``: sample, score,
judge, train, push), same tiny student and teacher, problems, seeds and steps, in one run; plus where a step's
time goes (mean seconds per step of each part, from the run's own history).

``--samplers``: the student sampler served by hf against vllm (``on_policy.sampler_engine``; vllm from
``.venv-vllm``), the student SmolLM2-135M-Instruct, the same tiny teacher, problems, seeds and steps, strictly in
turn (``overlap: false``, so a step's sampling and weight push are not hidden behind training), 1 training worker.

    python benchmarks/on_policy_throughput.py [--steps 8] [--quick]
    python benchmarks/on_policy_throughput.py --samplers [--steps 4]
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


def run_loop(dirs: list, problems: list[dict], work: Path, steps: int, overlap: bool, sampler_engine: str = "hf",
             workers: int = 2, max_new_tokens: int = 24):
    from distill_ray.config import OnPolicyConfig
    from distill_ray.onpolicy import ScoringTeacher, train_on_policy
    from distill_ray.train import TrainSettings

    op = OnPolicyConfig(steps=steps, prompts_per_step=4, samples=2, max_new_tokens=max_new_tokens, overlap=overlap,
                        sampler_engine=sampler_engine)
    name = f"{'overlap' if overlap else 'sequential'}-{sampler_engine}"
    settings = TrainSettings(workers=workers, lr=1e-3, max_length=384, log_every=0,
                             run_name=f"on-policy-{name}-{time.time_ns()}")
    return train_on_policy(dirs[0], problems, [ScoringTeacher("t", str(dirs[1]))], work / name, settings, op)


def time_split(result) -> dict:
    """Mean seconds per step of each part, over the steps after the first (the first has no overlap to show)."""
    from distill_ray.onpolicy.loop import STEP_PARTS

    later = result.history[1:] or result.history
    return {part: sum(h[part] for h in later) / len(later) for part in STEP_PARTS}


def start_ray(prefix: str) -> Path:
    """A work folder, and a 2-CPU Ray cluster in it unless one is running."""
    import ray

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    work = Path(tempfile.mkdtemp(prefix=prefix))
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(work / "ray"))
    return work


def measure(quick: bool = False, steps: int | None = None) -> list[dict]:
    work = start_ray("bench-on-policy-")
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


def measure_samplers(steps: int = 4) -> list[dict]:
    """The hf and the vllm sampler on the same loop (SmolLM2-135M student): steps/s, mean sample and weight-push
    seconds per step (``sync_s``: rank 0 gathering the weights, the object store, the sampler's reload)."""
    from distill_ray.models import resolve_model
    from distill_ray.onpolicy.loop import STEP_PARTS

    work = start_ray("bench-on-policy-samplers-")
    dirs, problems = setup(work)
    student = [str(resolve_model("smollm2")), dirs[1]]
    rows = []
    for engine in ("hf", "vllm"):
        result = run_loop(student, problems, work, steps, overlap=False, sampler_engine=engine, workers=1,
                          max_new_tokens=48)
        history = result.history
        pushes = [h["sync_s"] for h in history if h["sync_s"] > 0]
        # Steps after the first: the first also waits for the sampler to start (vLLM's engine, ~20-40 s).
        rows.append({"sampler": engine, "steps": result.steps,
                     "steps_per_s": (len(history) - 1) / sum(h["step_s"] for h in history[1:]),
                     "step_s": [round(h["step_s"], 2) for h in history],
                     "sample_s": [round(h["sample_s"], 2) for h in history], "push_s": [round(s, 2) for s in pushes],
                     "split": {part: sum(h[part] for h in history) / len(history) for part in STEP_PARTS}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="default: 10 (--samplers: 4)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--samplers", action="store_true", help="hf against vllm samplers, SmolLM2-135M student")
    args = parser.parse_args()
    if args.samplers:
        for row in measure_samplers(args.steps or 4):
            print(f"sampler {row['sampler']}: {row['steps_per_s']:.3f} steps/s after the first of {row['steps']} "
                  f"steps; step s {row['step_s']}; sample s {row['sample_s']}; weight pushes s {row['push_s']}; "
                  "mean per step: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in row["split"].items()), flush=True)
        return
    for row in measure(args.quick, None if args.quick else args.steps or 10):
        print(f"{row['case']}: overlapped {row['ours']:.3f} {row['unit']} | {row['baseline_name']} "
              f"{row['baseline']:.3f} | ratio {row['ours'] / row['baseline']:.2f}x")
        print("mean seconds per step (overlapped): " + ", ".join(f"{k} {v:.2f}" for k, v in row["split"].items()))
        print(f"staleness per step: {row['staleness']}")


if __name__ == "__main__":
    main()
