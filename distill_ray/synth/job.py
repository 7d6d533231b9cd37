"""``distill-ray puzzles``: the streaming Ray Data job that writes verified, deduplicated puzzles to Parquet.

    ray.data.range(num) seeds --procedural_rows-->  \\
                                                     union -> PuzzleVerifier (actor pool, sandbox)
    ray.data.range(M) prompts --TeacherPuzzleActor-> /        -> PuzzleSink (one actor)

Dedupe keys are computed where rows are made (generation tasks, teacher actor), in parallel; the sink only
looks them up.

The sink deduplicates across the whole job and writes one shard per chunk (``distill_ray.shards``); the driver
only sums the per-batch counts the sink returns, prints progress, and writes ``DIR.manifest.json`` (parameters,
counts per family and per fate summed from every shard's metadata, throughput of this run). Rerunning with the
same output resumes: chunks whose shard exists are skipped at the source.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from dataclasses import asdict

from distill_ray.shards import Manifest, ShardSet
from distill_ray.synth.config import Plan, PuzzleJobConfig
from distill_ray.synth.sink import KEPT, rejected_dir


def build_dataset(cfg: PuzzleJobConfig, plan: Plan, done: frozenset):
    """The stages. CPU reservations are logical: actors hold 0.85 CPU in all (verifier 0.25, its sandbox
    processes are not counted; sink 0.1; teacher 0.5), which leaves a whole CPU for the 1-CPU read+generate
    tasks (``ray.data.range``'s read tasks take 1 CPU; generation fuses with them), so 2 CPUs never deadlock
    (more verifier actors, or a teacher with more of them, need more CPUs)."""
    import ray.data

    from distill_ray.synth.rows import PuzzleVerifier, procedural_rows, prompt_rows
    from distill_ray.synth.sink import PuzzleSink

    families = cfg.families or list(_all_families())
    parts = []
    if plan.num:
        blocks = max(1, min(plan.num // 500, 4 * plan.procedural_chunks))   # ~chunk-aligned blocks, never tiny
        parts.append(ray.data.range(plan.num, override_num_blocks=blocks).map_batches(
            procedural_rows, batch_size=None, batch_format="pandas", num_cpus=0.5,
            fn_kwargs=dict(families=families, difficulties=cfg.difficulties, seed=cfg.seed,
                           chunk_size=plan.chunk_size, done=done, scope=cfg.near_dup_scope,
                           threshold=cfg.near_dup_threshold)))
    if plan.teacher_prompts:
        parts.append(_teacher_dataset(cfg, plan, done, prompt_rows))
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    limits = dict(timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb)
    ds = ds.map_batches(PuzzleVerifier, fn_constructor_kwargs=dict(limits=limits, workers=cfg.verify_workers,
                                                                  trusted_batch=cfg.trusted_batch),
                        compute=ray.data.ActorPoolStrategy(size=cfg.verify_actors), num_cpus=0.25,
                        batch_size=cfg.verify_batch, batch_format="pandas")
    return ds.map_batches(PuzzleSink, fn_constructor_kwargs=dict(output=cfg.output, plan=asdict(plan),
                                                                  scope=cfg.near_dup_scope,
                                                                  threshold=cfg.near_dup_threshold),
                          compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.1, batch_size=None,
                          batch_format="pandas")


def _teacher_dataset(cfg: PuzzleJobConfig, plan: Plan, done: frozenset, prompt_rows):
    import ray.data

    from distill_ray.synth.teacher import TeacherPuzzleActor

    sampling = dict(n=cfg.teacher_samples, temperature=cfg.teacher_temperature, top_p=0.95,
                    max_new_tokens=cfg.teacher_max_new_tokens, seed=cfg.seed)
    prompts = ray.data.range(plan.teacher_prompts).map_batches(
        prompt_rows, batch_format="pandas",
        fn_kwargs=dict(procedural_chunks=plan.procedural_chunks, prompts_per_chunk=plan.prompts_per_chunk,
                       done=done))
    return prompts.map_batches(
        TeacherPuzzleActor, fn_constructor_kwargs=dict(model=cfg.teacher_model, sampling=sampling,
                                                       p3_path=cfg.p3_path, shots=cfg.teacher_shots,
                                                       seed=cfg.seed, scope=cfg.near_dup_scope,
                                                       threshold=cfg.near_dup_threshold),
        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.5, batch_size=4, batch_format="pandas")


def _all_families():
    from distill_ray.tasks.families import FAMILIES

    return FAMILIES


def summarize(output: str, plan: Plan) -> dict:
    """Counts per family and per fate over every written shard (from shard metadata only), and progress."""
    shards = ShardSet(output)
    by_family, by_fate, rows = Counter(), Counter(), 0
    for chunk in sorted(shards.done()):
        meta = shards.read_meta(chunk)
        rows += meta.get("rows", 0)
        for key, n in meta.get("counts", {}).items():
            family, fate = key.split("|", 1)
            by_fate[fate] += n
            if fate == KEPT:
                by_family[family] += n
    return {"chunks_done": len(shards.done()), "chunks_total": plan.total_chunks, "rows_done": rows,
            "rows_total": plan.total_rows, "kept": by_fate[KEPT], "kept_by_family": dict(sorted(by_family.items())),
            "by_fate": dict(by_fate.most_common())}


def run_job(cfg: PuzzleJobConfig, log=print) -> dict:
    """Run (or resume) the job; returns the summary written to ``DIR.manifest.json``."""
    import ray
    import ray.data

    plan = Plan.of(cfg)
    shards = ShardSet(cfg.output)
    ShardSet(rejected_dir(cfg.output)).remove_temp_files()
    shards.remove_temp_files()
    manifest = Manifest.for_output(cfg.output)
    manifest.start(cfg.content_params())
    done = frozenset(shards.done())
    todo = plan.total_chunks - len(done)
    log(f"[puzzles] {plan.total_rows} rows in {plan.total_chunks} chunks; {len(done)} already written, {todo} to do")
    start, counts = time.perf_counter(), Counter()
    if todo:
        if not ray.is_initialized():
            address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
            local = {} if address else dict(num_cpus=cfg.num_cpus, include_dashboard=False)
            ray.init(address=address, log_to_driver=False, **local)
        ray.data.DataContext.get_current().enable_progress_bars = False   # our progress line replaces them
        counts = _drive(build_dataset(cfg, plan, done), cfg, plan, len(done), log)
    seconds = time.perf_counter() - start
    rows_run = sum(n for (fam, fate), n in counts.items() if not fate.startswith("_"))
    summary = summarize(cfg.output, plan)
    summary["run"] = {"seconds": round(seconds, 2), "rows": rows_run,
                      "rows_per_s": round(rows_run / seconds, 1) if seconds else 0.0,
                      "kept": sum(n for (f, fate), n in counts.items() if fate == KEPT),
                      "peak_chunks_pending": counts[("", "_peak_chunks_pending")]}
    manifest.update(summary=summary)
    if summary["chunks_done"] < plan.total_chunks:   # e.g. the sink actor was restarted and lost its buffers
        log(f"[puzzles] {plan.total_chunks - summary['chunks_done']} chunks unfinished: rerun to resume them")
    log(f"[puzzles] done: {summary['kept']} kept of {summary['rows_done']} rows; this run {rows_run} rows in "
        f"{seconds:.1f} s ({summary['run']['rows_per_s']} rows/s); fates {summary['by_fate']}")
    return summary


def _drive(ds, cfg: PuzzleJobConfig, plan: Plan, chunks_before: int, log) -> Counter:
    counts, chunks, last, start = Counter(), chunks_before, 0.0, time.perf_counter()
    for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
        for family, fate, n in zip(batch["family"], batch["fate"], batch["count"]):
            if fate == "_chunks_pending":   # a level, not a count: keep its peak
                counts[("", "_peak_chunks_pending")] = max(counts[("", "_peak_chunks_pending")], int(n))
                continue
            counts[(family, fate)] += int(n)
            if fate == "_chunks_written":
                chunks += int(n)
        now = time.perf_counter()
        if now - last >= cfg.progress_s:
            last = now
            rows = sum(n for (f, fate), n in counts.items() if not fate.startswith("_"))
            kept = sum(n for (f, fate), n in counts.items() if fate == KEPT)
            log(f"[puzzles] chunks {chunks}/{plan.total_chunks}  rows {rows}  kept {kept}  "
                f"{rows / (now - start):.0f} rows/s")
    return counts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num", type=int, required=True, help="procedural puzzles (seeds) to generate")
    p.add_argument("--output", required=True, help="output directory of Parquet shards")
    p.add_argument("--families", nargs="+", default=None, help="procedural families (default: all)")
    p.add_argument("--difficulty", type=int, nargs="+", default=None, help="difficulties (default: 1 2 3)")
    p.add_argument("--teacher-prompts", type=int, default=0, help="teacher prompts for teacher-written puzzles")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other PuzzleJobConfig field, e.g. --set chunk_size=5000 (repeatable)")


def config_from_args(args) -> PuzzleJobConfig:
    import yaml

    fields = dict(num=args.num, output=args.output, families=args.families, teacher_prompts=args.teacher_prompts)
    if args.difficulty:
        fields["difficulties"] = args.difficulty
    for item in args.set:
        key, _, value = item.partition("=")
        fields[key] = yaml.safe_load(value)
    return PuzzleJobConfig(**fields)
