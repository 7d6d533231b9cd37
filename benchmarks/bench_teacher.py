"""Teacher stage throughput: the Ray Data pipeline (prompt -> teacher actor pool) against the raw engine's
``generate`` on the same prompts, same batch size and sampling, measured in the same run.

    python benchmarks/bench_teacher.py [--prompts 32] [--samples 4] [--max-new-tokens 24] [--batch-size 8]

Prints prompts/s and generated tokens/s for both and the ratio pipeline / raw.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import ray

from distill_ray.pipeline import TeacherSpec, build_prompts, teacher_stages
from distill_ray.prompts import exemplar_pool
from distill_ray.stages import apply_stages
from distill_ray.tasks import load_problems
from distill_ray.teachers import HFEngine, SamplingSettings


def raw_engine(problems, exemplars, sampling, batch_size, threads) -> dict:
    """The baseline: one engine in this process, a plain loop over batches."""
    import pandas as pd

    engine = HFEngine("smollm2", torch_threads=threads)
    batch = build_prompts(pd.DataFrame(problems), exemplars, num_shots=3, strategy="fixed", seed=0)
    prompts = [engine.render(json.loads(m), p) for m, p in zip(batch["messages"], batch["response_prefix"])]
    engine.generate(prompts[:2], SamplingSettings(n=1, max_new_tokens=4))  # warm-up
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(prompts), batch_size):
        for generations in engine.generate(prompts[i:i + batch_size], sampling):
            tokens += sum(g.completion_tokens for g in generations)
    return {"seconds": time.perf_counter() - start, "tokens": tokens}


def pipeline(problems, exemplars, sampling, batch_size, threads) -> dict:
    """Ray Data: prompt stage + teacher actor pool (1 actor, the same threads), timed over the whole stream."""
    spec = TeacherSpec(name="smollm2", engine="hf", model="smollm2", sampling=sampling, batch_size=batch_size,
                       cpus_per_actor=1, engine_options={"torch_threads": threads})
    stages = teacher_stages(spec, exemplars, seed=0)[:2]  # prompt -> teacher
    ds = apply_stages(ray.data.from_items(problems), list(problems[0]), stages)
    start = time.perf_counter()
    rows = ds.select_columns(["completion_tokens", "gen_seconds"]).to_pandas()
    # gen_seconds is each batch's generate() time spread over its rows: the sum is the engine's busy time,
    # which separates the engine's own speed from the pipeline's fixed costs (actor start, model load).
    return {"seconds": time.perf_counter() - start, "tokens": int(rows["completion_tokens"].sum()),
            "engine_seconds": float(rows["gen_seconds"].sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    train, _ = load_problems("puzzles", num_train=args.prompts + 8, num_eval=1, seed=0)
    exemplars, problems = exemplar_pool(train[:8]), train[8:]
    sampling = SamplingSettings(n=args.samples, max_new_tokens=args.max_new_tokens, temperature=0.8)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tempfile.mkdtemp(prefix="bench-"))
    ray.data.DataContext.get_current().enable_progress_bars = False
    results = {"raw_engine": raw_engine(problems, exemplars, sampling, args.batch_size, args.threads),
               "ray_data_pipeline": pipeline(problems, exemplars, sampling, args.batch_size, args.threads)}
    print(f"teacher stage: {len(problems)} prompts x {args.samples} samples, batch {args.batch_size}, "
          f"{args.threads} torch threads")
    for name, r in results.items():
        r["prompts_per_s"] = len(problems) / r["seconds"]
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
        print(f"  {name:18s} {r['seconds']:7.1f} s  {r['prompts_per_s']:6.2f} prompts/s  {r['tokens_per_s']:7.1f} tokens/s")
    pipe = results["ray_data_pipeline"]
    pipe["engine_tokens_per_s"] = pipe["tokens"] / pipe["engine_seconds"]
    ratio = pipe["tokens_per_s"] / results["raw_engine"]["tokens_per_s"]
    busy_ratio = pipe["engine_tokens_per_s"] / results["raw_engine"]["tokens_per_s"]
    print(f"  ratio pipeline/raw tokens/s: {ratio:.2f} end to end (actor start and model load included), "
          f"{busy_ratio:.2f} while generating")
    print(json.dumps({**results, "ratio_tokens_per_s": ratio, "ratio_while_generating": busy_ratio}))


if __name__ == "__main__":
    main()
