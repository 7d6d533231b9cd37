"""``distill-ray puzzles``: runs the puzzle pipeline (``pipelines/puzzles.py``) and reports on it.

The sink deduplicates across the whole job and writes one shard per chunk (``distill_ray.shards``); the driver
only sums the per-batch counts the sink returns, prints progress, and writes ``DIR.manifest.json`` (parameters,
counts per family and per fate summed from every shard's metadata, throughput of this run). Rerunning with the
same output resumes: chunks whose shard exists are skipped at the source.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from distill_ray.shards import Manifest, ShardSet
from distill_ray.stages.generate import schedule_of
from distill_ray.stages.sink import KEPT, rejected_dir
from distill_ray.stopping import Stopped, record_stop
from distill_ray.synth.config import Plan, PuzzleJobConfig


def build_dataset(cfg: PuzzleJobConfig, plan: Plan, done: frozenset, schedule=None):
    from distill_ray.pipelines.puzzles import SOURCE, puzzle_stages, source
    from distill_ray.stages import apply_stages

    return apply_stages(source(plan), SOURCE, puzzle_stages(cfg, plan, done, schedule))


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
    from distill_ray.cluster import alive_nodes, connect_ray, job_retries

    plan = Plan.of(cfg)
    shards = ShardSet(cfg.output)
    ShardSet(rejected_dir(cfg.output)).remove_temp_files()
    shards.remove_temp_files()
    manifest = Manifest.for_output(cfg.output)
    manifest.start(cfg.content_params())
    done = frozenset(shards.done())
    todo = plan.total_chunks - len(done)
    log(f"[puzzles] {plan.total_rows} rows in {plan.total_chunks} chunks; {len(done)} already written, {todo} to do")
    start, counts, retried = time.perf_counter(), Counter(), {}
    schedule = schedule_of(cfg, plan.num) if todo and plan.num else None
    capped = schedule.capped() if schedule is not None else {}
    if capped:
        log(f"[puzzles] {len(capped)} of {len(schedule.cells)} family/difficulty cells show a small space: drawn at "
            f"most {min(capped.values())}-{max(capped.values())} times each, their turns go to the others")
    if todo:
        connect_ray(cfg.ray_address, cfg.num_cpus, progress_bars=False)   # our progress line replaces them
        alive = alive_nodes()
        try:
            counts = _drive(build_dataset(cfg, plan, done, schedule), cfg, plan, len(done), log)
        except Stopped as stop:   # the stream is shut down: its abandoned shards leave only temporary files
            shards.remove_temp_files()
            ShardSet(rejected_dir(cfg.output)).remove_temp_files()
            record_stop(manifest, stop, len(shards.done()), plan.total_chunks)
            log(f"[puzzles] {stop}; {len(shards.done())} of {plan.total_chunks} chunks written, the rest "
                "abandoned: rerun with the same output to resume")
            raise
        retried = job_retries(alive)
    seconds = time.perf_counter() - start
    rows_run = sum(n for (fam, fate), n in counts.items() if not fate.startswith("_"))
    summary = summarize(cfg.output, plan)
    summary["run"] = {"seconds": round(seconds, 2), "rows": rows_run,
                      "rows_per_s": round(rows_run / seconds, 1) if seconds else 0.0,
                      "kept": sum(n for (f, fate), n in counts.items() if fate == KEPT),
                      "peak_chunks_pending": counts[("", "_peak_chunks_pending")]}
    summary["run"]["retried"] = retried
    manifest.update(summary=summary, status="complete" if summary["chunks_done"] == plan.total_chunks else "partial")
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
    from distill_ray.config import apply_override, validate

    fields = dict(num=args.num, output=args.output, families=args.families, teacher_prompts=args.teacher_prompts)
    if args.difficulty:
        fields["difficulties"] = args.difficulty
    for item in args.set:
        apply_override(fields, item)
    return validate(PuzzleJobConfig, fields)
