"""``distill-ray``: one subcommand per stage (generate, verify, train, evaluate) and ``run`` for the loop.

Every subcommand takes ``--config FILE`` and any number of ``--set section.field=value`` overrides; the
most used fields also have their own flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distill_ray.config import ConfigError, RunConfig, load_config

# flag -> config field it overrides
NAMED_FLAGS = {
    "output_dir": "output_dir", "seed": "seed", "name": "name", "task_source": "task.source",
    "task_path": "task.path", "num_train": "task.num_train", "num_eval": "task.num_eval",
    "teacher_model": "teacher.model", "samples": "teacher.samples", "ray_address": "ray.address",
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="distill-ray", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)
    for name, help_ in [("run", "generate -> verify -> vote -> train -> evaluate -> report"),
                        ("generate", "sample teachers, verify and vote; write dataset/ (Parquet)"),
                        ("verify", "re-run every row's check of a dataset in the sandbox"),
                        ("train", "fine-tune the student on dataset/ with Ray Train + DeepSpeed"),
                        ("evaluate", "pass@k of teacher and students on the held-out problems"),
                        ("critic", "train a correctness critic on dataset/'s verdicts; report it on held-out rows"),
                        ("retriever", "EPR: score exemplars with the teacher, train a dense exemplar retriever "
                         "(prompt.exemplars: learned)"),
                        ("experiment", "the EKT experiment: one student, one data budget, arms x seeds"),
                        ("decompose", "decompositional distillation: decomposer + solver students against one "
                         "CoT/program student on the same verified decompositions"),
                        ("disco", "a sentence-embedding student distilled from the teacher's pooled states, then "
                         "contrastive (KD) fine-tuning, scored by Spearman on puzzle-similarity pairs")]:
        sub = commands.add_parser(name, help=help_)
        sub.add_argument("--config", help="YAML config file (see configs/)")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config field, e.g. --set teacher.samples=8 (repeatable)")
        for flag in NAMED_FLAGS:
            sub.add_argument("--" + flag.replace("_", "-"), dest=flag, default=None,
                             help=f"overrides {NAMED_FLAGS[flag]}")
        if name == "verify":
            sub.add_argument("input", nargs="?", help="JSONL checks to verify ('-': stdin); without it, "
                             "re-verify the run's dataset")
            sub.add_argument("--output", default="-", help="JSONL verdicts for INPUT ('-': stdout)")
            sub.add_argument("--dataset", help="dataset directory (default: <output_dir>/dataset)")
        if name in ("train", "critic"):
            sub.add_argument("--dataset", help="dataset directory (default: <output_dir>/dataset)")
        if name == "critic":
            sub.add_argument("--out", help="where the critic goes (default: critic.path, else <output_dir>/critic)")
        if name == "retriever":
            sub.add_argument("--out", help="where the retriever goes (default: <output_dir>/retriever)")
            sub.add_argument("--queries", type=int, default=96, help="train problems scored (after task.num_train)")
            sub.add_argument("--candidates", type=int, default=12, help="exemplars scored per problem")
            sub.add_argument("--epochs", type=int, default=40, help="retriever training epochs")
        if name == "evaluate":
            sub.add_argument("--model", action="append", default=[], metavar="LABEL=PATH",
                             help="evaluate this model (repeatable; default: teacher and students of the run)")
    commands.add_parser("config-reference", help="print every config field with its default and meaning")
    commands.add_parser("docs", help="rewrite the README's generated sections (stage tables, config reference)")
    bench = commands.add_parser("bench", help="throughput of every stage against its simplest baseline")
    bench.add_argument("--stages", default="teacher,verify,vote,puzzles,train,on_policy,stream",
                       help="comma-separated stages (teacher, verify, vote, puzzles, train, on_policy, stream)")
    bench.add_argument("--quick", action="store_true",
                       help="small sizes, 2 repetitions: 1-3 minutes per stage on 2 idle cores")
    bench.add_argument("--repeats", type=int, help="repetitions per stage (default 3, quick 2); medians reported")
    bench.add_argument("--output", default="outputs/bench", help="directory for bench.md, bench.json, bench.png")
    from distill_ray.synth.job import add_arguments as add_puzzle_arguments

    add_puzzle_arguments(commands.add_parser("puzzles", help="generate, verify and deduplicate synthetic "
                                             "programming puzzles into resumable Parquet shards"))
    return root


def config_from_args(args) -> RunConfig:
    overrides = list(args.set)
    for flag, field in NAMED_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{field}={value}")
    return load_config(args.config, overrides)


def verify_jsonl_main(cfg: RunConfig, input_path: str, output_path: str) -> int:
    """``distill-ray verify IN.jsonl``: the sandbox over JSONL records, limits from the config."""
    from distill_ray.verify.jsonl import main as jsonl_main

    v = cfg.verify
    return jsonl_main([input_path, "--output", output_path, "--timeout-s", str(v.timeout_s),
                       "--memory-mb", str(v.memory_mb), "--workers", str(v.workers_per_actor)])


def main(argv: list[str] | None = None) -> int:
    """Run one command; SIGTERM or SIGINT stops it gracefully (``stopping.py``), exit code 128 + the signal."""
    from distill_ray.stopping import Stopped, stop_on_signals

    args = parser().parse_args(argv)
    try:
        with stop_on_signals():
            return run_command(args)
    except Stopped as stop:
        print(f"distill-ray {args.command}: {stop}; rerun the same command to resume", file=sys.stderr)
        return stop.exit_code


def run_command(args) -> int:
    if args.command == "puzzles":
        from distill_ray.synth.job import config_from_args as puzzle_config, run_job

        try:
            cfg = puzzle_config(args)
        except ValueError as error:   # ConfigError: names each bad field
            print(f"distill-ray puzzles: {error}", file=sys.stderr)
            return 2
        run_job(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
        return 0
    if args.command == "bench":
        from distill_ray.bench import run_bench

        run_bench([s.strip() for s in args.stages.split(",") if s.strip()], Path(args.output), quick=args.quick,
                  repeats=args.repeats)
        print(f"distill-ray bench: report in {args.output}/bench.md")
        return 0
    if args.command == "config-reference":
        from distill_ray.docs import config_reference

        print(config_reference())
        return 0
    if args.command == "docs":
        from distill_ray.docs import README, write_readme

        print(f"distill-ray docs: {', '.join(write_readme()) or 'nothing'} changed in {README}")
        return 0
    try:
        cfg = config_from_args(args)
    except ConfigError as error:
        print(f"distill-ray: {error}", file=sys.stderr)
        return 2
    from distill_ray import workflow

    if args.command == "run":
        workflow.run(cfg)
    elif args.command == "generate":
        print(json.dumps(workflow.generate(cfg), indent=2))
    elif args.command == "verify" and args.input:
        return verify_jsonl_main(cfg, args.input, args.output)
    elif args.command == "verify":
        print(json.dumps(workflow.reverify(cfg, args.dataset), indent=2))
    elif args.command == "train":
        print(json.dumps(workflow.train(cfg, args.dataset), indent=2, default=str))
    elif args.command == "critic":
        print(json.dumps(workflow.critic(cfg, args.dataset, args.out), indent=2))
    elif args.command == "retriever":
        print(json.dumps(workflow.retriever(cfg, args.out, args.queries, args.candidates, args.epochs), indent=2))
    elif args.command == "evaluate":
        models = dict(item.split("=", 1) for item in args.model) or None
        print(json.dumps(workflow.evaluate(cfg, models), indent=2))
    elif args.command == "experiment":
        from distill_ray.experiment import run_experiment

        report = run_experiment(cfg)
        print(f"distill-ray experiment: {Path(cfg.output_dir) / 'experiment.md'} "
              f"({len(report['arms'])} arms, {len(report['seeds'])} seeds)")
    elif args.command == "decompose":
        from distill_ray.decompose import run_decompose

        report = run_decompose(cfg)
        print(f"distill-ray decompose: {Path(cfg.output_dir) / 'decompose.md'} ({len(report['arms'])} arms)")
    elif args.command == "disco":
        from distill_ray.embed.run import run_disco

        report = run_disco(cfg)
        print(f"distill-ray disco: {Path(cfg.output_dir) / 'disco.md'} ({len(report['arms'])} arms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
