"""Teacher stage throughput: the Ray Data pipeline (prompt -> teacher actor pool per teacher) against each
raw engine's ``generate`` on the same prompts, same batch size and sampling, measured in the same run (the raw
loop in a Ray task: the same process priority as the teacher actor).

    python benchmarks/teacher_throughput.py [--teachers smollm2] [--prompts 32] [--samples 4]
                                            [--max-new-tokens 24] [--batch-size 8] [--threads 2]

``--teachers smollm2,gemma3`` runs two teachers (two actor pools) in one pipeline; the raw baseline then runs
the engines one after the other. Prints generated tokens/s for both and the ratio pipeline / raw.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import pandas as pd
import ray

from distill_ray.config import PromptConfig, TeacherConfig
from distill_ray.prompts import exemplar_pool
from distill_ray.stages import apply_stages, prompt, teacher
from distill_ray.stages.prompt import build_prompts
from distill_ray.stages.teacher import batch_sampling, engine_options, sampling_settings
from distill_ray.tasks import PROBLEM_COLUMNS, load_problems
from distill_ray.teachers import SamplingSettings, make_engine

PROMPT = PromptConfig(num_shots=3, exemplars="fixed")


def measure_raw(spec: TeacherConfig, problems: list[dict], exemplars) -> dict:
    """The baseline: one engine in this process, a plain loop over batches of ``spec.batch_size`` (each seeded as
    the teacher actor seeds it, so both sides sample the same completions when Ray Data forms the same batches:
    the bench prints both token counts); time and
    tokens from the engine's own ``BatchStats``, and the seconds from the start (model load, prompt rendering,
    warm-up) to the last batch: what a user's own script would take end to end."""
    start = time.perf_counter()
    engine = make_engine(spec.engine, spec.model, **engine_options(spec))
    batch = build_prompts(pd.DataFrame(problems), exemplars, PROMPT.num_shots, PROMPT.exemplars, seed=0)
    prompts = [engine.render(json.loads(m), p) for m, p in zip(batch["messages"], batch["response_prefix"])]
    engine.generate(prompts[:2], SamplingSettings(n=1, max_new_tokens=4))  # warm-up
    seconds = tokens = 0.0
    for i in range(0, len(prompts), spec.batch_size):
        # the teacher actor's seed for the same batch: the same samples, so the same tokens on both sides
        sampling = batch_sampling(sampling_settings(spec, seed=0), batch["task_id"][i:i + spec.batch_size])
        stats = engine.generate(prompts[i:i + spec.batch_size], sampling).stats
        seconds, tokens = seconds + stats.seconds, tokens + stats.completion_tokens
    return {"seconds": seconds, "tokens": int(tokens), "wall_seconds": time.perf_counter() - start}


def measure_raw_like_an_actor(spec: TeacherConfig, problems: list[dict], exemplars) -> dict:
    """``measure_raw`` in a Ray task with the actor's CPUs: a Ray worker process runs at Ray's worker niceness
    (15), as the teacher actor does, so on a machine that other jobs load both sides get the same share of it
    (in the driver, at nice 0, the baseline would win what the actor loses to them). ``task_seconds``: the task
    as the driver sees it, from submission: a worker process, its imports (torch, transformers), then
    ``measure_raw``, which is what the teacher actor's start costs the pipeline. ``max_calls=1``: each
    repetition gets a fresh process, as each pipeline gets a fresh actor."""
    task = ray.remote(num_cpus=spec.cpus_per_actor, max_calls=1)(measure_raw)
    start = time.perf_counter()
    result = ray.get(task.remote(spec, problems, exemplars))
    return {**result, "task_seconds": time.perf_counter() - start}


def raw_totals(raw: list[dict]) -> dict:
    """The raw loops of several teachers, run in turn, as one: their seconds and tokens summed."""
    return {key: sum(r[key] for r in raw) for key in ("seconds", "tokens", "wall_seconds", "task_seconds")}


def measure_pipeline(specs: list[TeacherConfig], problems: list[dict], exemplars) -> dict:
    """Ray Data: the prompt stage and one actor pool per teacher (their rows unioned), timed over the whole
    stream, actor start and model load included."""
    stages = [prompt.build(PROMPT, exemplars, seed=0), teacher.build(specs, seed=0)]
    ds = apply_stages(ray.data.from_items(problems), PROBLEM_COLUMNS, stages)
    start = time.perf_counter()
    rows = ds.select_columns(["teacher", "completion_tokens", "gen_seconds"]).to_pandas()
    # gen_seconds is each batch's generate() time spread over its rows: the sum is the engines' busy time,
    # which separates the engines' own speed from the pipeline's fixed costs (actor start, model load).
    return {"seconds": time.perf_counter() - start, "tokens": int(rows["completion_tokens"].sum()),
            "engine_seconds": float(rows["gen_seconds"].sum()),
            "rows_per_teacher": rows["teacher"].value_counts().to_dict()}


def specs_for(models: list[str], samples: int, max_new_tokens: int, batch_size: int,
              threads: int) -> list[TeacherConfig]:
    # The teacher actors share one logical CPU (Ray's other CPU runs the prompt tasks: with one CPU per actor,
    # two teachers on 2 CPUs starve the prompt stage and the job hangs), each with the raw engine's threads.
    return [TeacherConfig(name=m, engine="hf", model=m, samples=samples, max_new_tokens=max_new_tokens,
                          temperature=0.8, batch_size=batch_size, cpus_per_actor=1 / len(models),
                          torch_threads=threads) for m in models]


def measure(quick: bool = False, models: tuple[str, ...] = ("smollm2",)) -> list[dict]:
    """One repetition for `distill-ray bench`: tokens/s and prompts/s of the pipeline (end to end, and while
    generating) against the raw engine on the same prompts, both measured now."""
    prompts, samples, tokens = (8, 2, 12) if quick else (32, 4, 24)
    train, _ = load_problems("puzzles", num_train=prompts + 8, num_eval=1, seed=0)
    exemplars, problems = exemplar_pool(train[:8]), train[8:]
    specs = specs_for(list(models), samples, tokens, batch_size=8, threads=2)
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    raw = raw_totals([measure_raw_like_an_actor(spec, problems, exemplars) for spec in specs])
    raw_seconds, raw_tokens = raw["seconds"], raw["tokens"]
    pipe = measure_pipeline(specs, problems, exemplars)
    case = f"{'+'.join(models)}, {len(problems)} prompts x {samples} samples"
    row = {"stage": "teacher", "workers": None, "baseline_name": "raw engine generate(), same batches"}
    return [{**row, "case": f"{case}, end to end, from a fresh Ray worker on both sides", "unit": "tokens/s",
             "ours": pipe["tokens"] / pipe["seconds"], "baseline": raw_tokens / raw["task_seconds"],
             "baseline_name": "raw engine in a Ray task: worker, imports, load, render, warm-up, generate() loop"},
            {**row, "case": f"{case}, end to end, model load on both sides", "unit": "tokens/s",
             "ours": pipe["tokens"] / pipe["seconds"], "baseline": raw_tokens / raw["wall_seconds"],
             "baseline_name": "raw engine: load, render, warm-up, generate() loop"},
            {**row, "case": f"{case}, end to end", "unit": "tokens/s", "ours": pipe["tokens"] / pipe["seconds"],
             "baseline": raw_tokens / raw_seconds},
            {**row, "case": f"{case}, while generating", "unit": "tokens/s",
             "ours": pipe["tokens"] / pipe["engine_seconds"], "baseline": raw_tokens / raw_seconds},
            # prompts/s counts (prompt, teacher) pairs: each teacher answers every prompt
            {**row, "case": f"{case}, end to end", "unit": "prompts/s",
             "ours": len(problems) * len(specs) / pipe["seconds"], "baseline": len(problems) * len(specs) / raw_seconds}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", default="smollm2", help="comma-separated models (smollm2, gemma3, ...)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    train, _ = load_problems("puzzles", num_train=args.prompts + 8, num_eval=1, seed=0)
    exemplars, problems = exemplar_pool(train[:8]), train[8:]
    specs = specs_for(args.teachers.split(","), args.samples, args.max_new_tokens, args.batch_size, args.threads)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tempfile.mkdtemp(prefix="bench-"))
    ray.data.DataContext.get_current().enable_progress_bars = False
    raw = [measure_raw_like_an_actor(spec, problems, exemplars) for spec in specs]
    raw_total = raw_totals(raw)
    pipe = measure_pipeline(specs, problems, exemplars)
    raw_tps = raw_total["tokens"] / raw_total["seconds"]
    pipe_tps, busy_tps = pipe["tokens"] / pipe["seconds"], pipe["tokens"] / pipe["engine_seconds"]
    print(f"teacher stage: {args.teachers}, {len(problems)} prompts x {args.samples} samples, "
          f"batch {args.batch_size}, {args.threads} torch threads")
    for spec, r in zip(specs, raw):
        print(f"  raw {spec.name:14s} {r['seconds']:7.1f} s  {r['tokens'] / r['seconds']:7.1f} tokens/s")
    print(f"  raw (all, in turn)  {raw_total['seconds']:7.1f} s  {raw_tps:7.1f} tokens/s")
    print(f"  ray data pipeline   {pipe['seconds']:7.1f} s  {pipe_tps:7.1f} tokens/s end to end, "
          f"{busy_tps:7.1f} while generating")
    raw_wall_tps = raw_total["tokens"] / raw_total["wall_seconds"]
    print(f"  raw end to end      {raw_total['wall_seconds']:7.1f} s  {raw_wall_tps:7.1f} tokens/s (model load, "
          "rendering and warm-up included)")
    raw_task_tps = raw_total["tokens"] / raw_total["task_seconds"]
    print(f"  raw from a worker   {raw_total['task_seconds']:7.1f} s  {raw_task_tps:7.1f} tokens/s (the task from "
          "submission: worker, imports, load, render, warm-up, generate)")
    print(f"  ratio pipeline/raw tokens/s: {pipe_tps / raw_task_tps:.2f} end to end from a fresh Ray worker on both "
          f"sides, {pipe_tps / raw_wall_tps:.2f} end to end with the model load on both "
          f"sides, {pipe_tps / raw_tps:.2f} against the raw generate() time alone, {busy_tps / raw_tps:.2f} while "
          "generating")
    print(json.dumps({"raw": dict(zip(args.teachers.split(","), raw)), "pipeline": pipe,
                      "ratio_end_to_end": pipe_tps / raw_wall_tps, "ratio_tokens_per_s": pipe_tps / raw_tps,
                      "ratio_while_generating": busy_tps / raw_tps}))


if __name__ == "__main__":
    main()
