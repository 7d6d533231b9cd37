"""Puzzles at scale: the `distill-ray puzzles` job at N = 10^4 and 10^5 seeds (with --full also 1.35 x 10^6 seeds,
which give 10^6 distinct puzzles).

For each N the job runs in a fresh subprocess (its own local Ray cluster); we sample every 0.5 s the RSS of the
driver, of the sink actor (which holds the dedupe index, the one thing that grows with N) and of every other
process of the job (Ray workers, sandbox workers, raylet), and print puzzles/s end to end (Ray start-up
included) and in the job's streaming part. Baseline, same run: the same job verifying one P3 check per puzzle
(``trusted_batch=1``) instead of batches of 32 trusted puzzles per sandboxed process. Then a single-process
breakdown of where the time per puzzle goes.

    .venv/bin/python benchmarks/puzzles_scale.py            # 10^4, 10^5
    .venv/bin/python benchmarks/puzzles_scale.py --full     # and 1.35 x 10^6 seeds (~8 min on 2 quiet cores)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.jobs import Job  # noqa: E402


def run(num: int, out: Path, extra: list[str]) -> dict:
    shutil.rmtree(out.parent, ignore_errors=True)
    job = Job.launch(["puzzles", "--num", str(num), "--output", str(out), "--set", "chunk_size=10000",
                      "--set", "num_cpus=2", "--set", "progress_s=30", *extra], sink="PuzzleSink")
    wall = job.wait()
    summary = json.loads(out.with_name(out.name + ".manifest.json").read_text())["summary"]
    return {"num": num, "wall_s": wall, "per_s": num / wall, "stream_per_s": summary["run"]["rows_per_s"],
            "kept": summary["kept"], "fates": summary["by_fate"], **job.peaks_mb()}


def _split(r: dict, key: str) -> str:
    return f"{r.get(key, 0):.0f} ({r.get(key + '_private', 0):.0f}; {r.get(key + '_object_store', 0):.0f})"


def breakdown(num: int) -> dict:
    """Single-process seconds per puzzle of each step (the job runs them in parallel on 2 cores)."""
    from distill_ray.synth.dedupe import Deduper
    from distill_ray.stages.check import judge_puzzles
    from distill_ray.stages.verify import VerifierActor
    from distill_ray.stages.generate import procedural_rows
    from distill_ray.synth.dedupe import add_keys
    from distill_ray.tasks import list_families

    times = {}
    t = time.perf_counter()
    rows = procedural_rows(pd.DataFrame({"id": range(num)}), list_families(), [1, 2, 3], 0, num, frozenset())
    times["generate"] = time.perf_counter() - t
    for size, label in ((32, "verify, 32 per sandboxed process"), (1, "verify, one P3 check each")):
        verifier = VerifierActor({}, workers=2, judge=judge_puzzles, trusted_batch=size)
        t = time.perf_counter()
        verifier(rows.copy())
        times[label + " (2 workers, wall)"] = time.perf_counter() - t
        verifier.close()
    t = time.perf_counter()
    keyed = add_keys(rows, scope="teacher", threshold=0.85)
    times["exact keys (AST canonical form)"] = time.perf_counter() - t
    t = time.perf_counter()
    Deduper().admit(keyed["exact_key"].tolist(), [None] * num)
    times["dedupe index (admit)"] = time.perf_counter() - t
    return {k: 1e6 * v / num for k, v in times.items()}


def measure(quick: bool = False, workdir: str = "/tmp/distill-ray-bench-puzzles") -> list[dict]:
    """One repetition for `distill-ray bench`: the job at one N, streaming puzzles/s, against the same job
    checking one puzzle per sandboxed P3 check, both measured now."""
    num = 2_000 if quick else 20_000
    work = Path(workdir)
    base = run(num, work / "baseline" / "ds", ["--set", "trusted_batch=1"])
    ours = run(num, work / "ours" / "ds", [])
    return [{"stage": "puzzles", "case": f"N = {num:,}, streaming", "unit": "puzzles/s", "workers": None,
             "ours": ours["stream_per_s"], "baseline": base["stream_per_s"],
             "baseline_name": "same job, one sandboxed check per puzzle"}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="also N = 1,350,000 seeds (10^6 distinct puzzles)")
    ap.add_argument("--sizes", type=int, nargs="+", help="override the sizes")
    ap.add_argument("--baseline-num", type=int, default=10_000, help="N of the one-check-per-puzzle baseline")
    ap.add_argument("--workdir", default="/tmp/distill-ray-puzzles-scale")
    args = ap.parse_args()
    sizes = args.sizes or ([10_000, 100_000] + ([1_350_000] if args.full else []))
    work = Path(args.workdir)
    print(f"machine: {psutil.cpu_count()} CPUs, load average {psutil.getloadavg()[0]:.1f} at start")
    base = run(args.baseline_num, work / "baseline" / "ds", ["--set", "trusted_batch=1"])
    print(f"baseline (one P3 check per puzzle), N={base['num']}: {base['per_s']:.0f} puzzles/s end to end, "
          f"{base['stream_per_s']:.0f}/s streaming")
    print("\n| N seeds | wall s | seeds/s end to end | streaming seeds/s | vs baseline | kept (distinct) | kept/s end to "
          "end | driver peak RSS MB | sink peak RSS MB (private; object store) | verifier actor (private; object "
          "store) | largest other process MB | all processes MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for num in sizes:
        r = run(num, work / f"n{num}" / "ds", [])
        print(f"| {num:,} | {r['wall_s']:.0f} | {r['per_s']:.0f} | {r['stream_per_s']:.0f} | "
              f"{r['stream_per_s'] / base['stream_per_s']:.1f}x | {r['kept']:,} | {r['kept'] / r['wall_s']:.0f} | "
              f"{r.get('driver', 0):.0f} | {_split(r, 'sink')} | {_split(r, 'verifier')} | "
              f"{r.get('worker_max', 0):.0f} | {r.get('all', 0):.0f} |", flush=True)
        print(f"  fates: {r['fates']}; largest other process: {r.get('worker_max_name')}", flush=True)
    print(f"\nload average {psutil.getloadavg()[0]:.1f} at end (other jobs share this machine)")
    print("\nwhere the time goes (one process, 5,000 puzzles; microseconds per puzzle):")
    for step, us in breakdown(5000).items():
        print(f"  {step:<50} {us:8.0f}")


if __name__ == "__main__":
    main()
