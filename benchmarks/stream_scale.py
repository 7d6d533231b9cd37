"""The distillation stream at scale: `distill-ray generate` over 10^4 and 10^5 puzzles x 4 samples (10^6 with
--full) on the `replay` engine (each problem's reference, 20% served wrong: no model, so what is measured is
the pipeline's own cost: prompts, Ray Data, extract, sandboxed verification, the sink's vote and Parquet).

For each N the job runs in a fresh subprocess (its own local Ray cluster); every 0.5 s we sample the RSS of the
driver, of the sink actor and of every other process, and the pids of teacher actor processes (one start per
actor for the whole job is the design). Then the smallest N is killed after its first shard and rerun: rows
exactly once, the shards written before the kill untouched. Ratios are against the smallest N of the same run.

    .venv/bin/python benchmarks/stream_scale.py            # 10^4, 10^5
    .venv/bin/python benchmarks/stream_scale.py --full     # and 10^6
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.jobs import Job  # noqa: E402

SAMPLES = 4


def config(num: int, out: Path, table: bool = False, dedupe: bool = True) -> Path:
    """The job's config: puzzles, zero-shot, the replay engine serving references (20% wrong). ``table``: the
    same puzzles as a Parquet table source (``task.source: table``, read by Ray Data tasks), and the replay
    engine serving them from a recorded dataset, so the job's driver never builds the problem list."""
    task = {"source": "puzzles", "num_train": num, "num_eval": 16, "difficulty": 1}
    engine = {"engine": "replay", "model": "references",
              "engine_options": {"task": task, "task_seed": 0, "pool_size": 0, "wrong_fraction": 0.2}}
    if table:
        task, engine = as_table(task, out / "input")
    cfg = {"name": f"stream-{num}", "output_dir": str(out), "seed": 0, "task": task, "chunk_size": 4096,
           "prompt": {"num_shots": 0, "pool_size": 0}, "train": {"enabled": False},
           # Two verifier actors, 1,024 rows a call: while one actor turns a batch into checks and its verdicts
           # back into columns, the other's sandbox workers keep the cores busy (one actor left ~13% of both
           # cores idle at 256 rows a call); one sandbox worker each, not two: 6-16% less CPU for the same job
           # (four interleaved pairs; see the README's stream section).
           "verify": {"batch_size": 1024, "actors": 2, "workers_per_actor": 1, "dedupe": dedupe},
           "teacher": {**engine, "samples": SAMPLES, "batch_size": 256}, "ray": {"num_cpus": 2}}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"   # JSON is YAML
    path.write_text(json.dumps(cfg))
    return path


def as_table(task: dict, directory: Path) -> tuple[dict, dict]:
    """The task's puzzles written as a Parquet table and each one's reference as a recorded dataset (made here,
    in the benchmark's process: the job reads both from disk)."""
    from distill_ray.tasks import load_problems
    from distill_ray.teachers.replay import reference_completion

    if not (directory / "problems.parquet").exists():
        train, eval_ = load_problems("puzzles", num_train=task["num_train"], num_eval=task["num_eval"], seed=0)
        problems = train + [{**p, "split": "eval"} for p in eval_]
        (directory / "recorded").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([{"question": p["question"], "sample_index": 0, "finished": True,
                                              "completion": reference_completion(p)} for p in problems]),
                       directory / "recorded" / "part-000000.parquet")
        pq.write_table(pa.Table.from_pylist(problems), directory / "problems.parquet")   # last: marks done
    table = {"source": "table", "path": str(directory / "problems.parquet"), "num_train": task["num_train"],
             "num_eval": task["num_eval"], "columns": {"id": "task_id"}}
    return table, {"engine": "replay", "model": str(directory / "recorded")}


def launch(config_path: Path) -> Job:
    return Job.launch(["generate", "--config", str(config_path)], sink="ShardSink", markers=("TeacherActor",))


def run(num: int, out: Path, table: bool = False, dedupe: bool = True) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    job = launch(config(num, out, table, dedupe))   # config() makes the table and recorded dataset first
    wall = job.wait()
    stats = json.loads((out / "dataset.manifest.json").read_text())["stats"]
    rows = num * SAMPLES
    return {"num": num, "wall_s": wall, "rows_per_s": rows / wall, "stream_rows_per_s": rows / stats["seconds"],
            "verified": stats["verified"], "kept": stats["kept"], "teacher_starts": len(job.starts["TeacherActor"]),
            **job.peaks_mb()}


def kill_and_resume(num: int, out: Path) -> dict:
    """Kill the job's whole session once its first shard exists, rerun it, and check what the dataset holds."""
    shutil.rmtree(out, ignore_errors=True)
    shards = out / "dataset"
    config_path = config(num, out)
    job = launch(config_path)
    while not list(shards.glob("part-*.parquet")):
        if job.proc.poll() is not None:
            raise RuntimeError("the job ended before its first shard")
        time.sleep(0.2)
    job.kill()
    before = {p.name: p.stat().st_mtime_ns for p in shards.glob("part-*.parquet")}
    resumed = launch(config_path).wait()
    after = {p.name: p.stat().st_mtime_ns for p in shards.glob("part-*.parquet")}
    rows = pq.read_table(shards, columns=["task_id", "teacher", "sample_index"]).to_pandas()
    return {"shards_before_kill": len(before), "shards": len(after),
            "untouched": all(after[name] == stamp for name, stamp in before.items()),
            "rows": len(rows), "distinct_rows": len(rows.drop_duplicates()), "expected_rows": num * SAMPLES,
            "resume_wall_s": resumed}


def measure(quick: bool = False, workdir: str = "/tmp/distill-ray-bench-stream") -> list[dict]:
    """One repetition for `distill-ray bench`: rows/s and driver RSS at the larger N against the smaller."""
    small, large = (1_000, 4_000) if quick else (10_000, 40_000)
    a, b = run(small, Path(workdir) / "small"), run(large, Path(workdir) / "large")
    return [{"stage": "stream", "case": f"{large:,} problems x {SAMPLES}, replay engine", "unit": "rows/s",
             "workers": None, "ours": b["stream_rows_per_s"], "baseline": a["stream_rows_per_s"],
             "baseline_name": f"the same job at {small:,} problems"},
            {"stage": "stream", "case": f"driver peak RSS at {large:,} problems", "unit": "MiB", "workers": None,
             "ours": b.get("driver", 0.0), "baseline": a.get("driver", 0.0),
             "baseline_name": f"the same job at {small:,} problems"}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="also 10^6 problems")
    ap.add_argument("--sizes", type=int, nargs="+", help="override the sizes")
    ap.add_argument("--workdir", default="/tmp/distill-ray-stream-scale")
    ap.add_argument("--table", action="store_true", help="the puzzles as a Parquet table source")
    ap.add_argument("--no-dedupe", action="store_true", help="verify every candidate, repeats included (the "
                    "verify.dedupe: false baseline)")
    args = ap.parse_args()
    sizes = args.sizes or ([10_000, 100_000] + ([1_000_000] if args.full else []))
    work = Path(args.workdir)
    print(f"machine: {psutil.cpu_count()} CPUs, load average {psutil.getloadavg()[0]:.1f} at start")
    print(f"\n| problems x {SAMPLES} | wall s | rows/s end to end | rows/s streaming | vs smallest | verified | kept "
          "| teacher actor starts | driver peak RSS MB | vs smallest | sink peak RSS MB | largest other MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    first = None
    for num in sizes:
        r = run(num, work / f"n{num}", args.table, dedupe=not args.no_dedupe)
        first = first or r
        print(f"| {num:,} | {r['wall_s']:.0f} | {r['rows_per_s']:.0f} | {r['stream_rows_per_s']:.0f} | "
              f"{r['stream_rows_per_s'] / first['stream_rows_per_s']:.2f}x | {r['verified']:,} | {r['kept']:,} | "
              f"{r['teacher_starts']} | {r.get('driver', 0):.0f} | {r.get('driver', 0) / first.get('driver', 1):.2f}x | "
              f"{r.get('sink', 0):.0f} | {max(r.get('worker_max', 0), r.get('verifier', 0)):.0f} |", flush=True)
    k = kill_and_resume(sizes[0], work / "killed")
    print(f"\nkilled after its first shard, then rerun ({sizes[0]:,} problems): {k}")
    print(f"\nload average {psutil.getloadavg()[0]:.1f} at end (other jobs share this machine)")


if __name__ == "__main__":
    main()
