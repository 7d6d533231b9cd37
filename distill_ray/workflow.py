"""The steps of a distillation run, each usable alone: generate, train, evaluate; ``run`` chains them.

Each step reads the typed config and passes plain values to the library; outputs land under
``cfg.output_dir``: ``dataset/`` (Parquet, one row per candidate), ``student/`` (Hugging Face format),
``eval/`` (evaluation candidates) and the report.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from distill_ray.config import RunConfig, TeacherConfig
from distill_ray.critic import Critic, top_pick_pass, train_critic
from distill_ray.evaluate.passk import pass_at_k, summarize_passk
from distill_ray.evaluate.report import write_model_card, write_report
from distill_ray.mlflow_log import mlflow_run, numbers
from distill_ray.models import resolve_model
from distill_ray.pipelines.distill import distill_stages
from distill_ray.prompts import Exemplar, build_messages, exemplar_pool, render, response_prefix
from distill_ray.resumable import ProblemChunks, TableChunks, row_params, run_in_shards
from distill_ray.shards import Manifest, ShardSet
from distill_ray.stages import apply_stages
from distill_ray.tasks.decontaminate import EvalIndex, contaminated_count, decontaminate
from distill_ray.tasks.schema import PROBLEM_COLUMNS


def log(message: str) -> None:
    print(f"[distill-ray {time.strftime('%H:%M:%S')}] {message}", flush=True)


def connect_ray(cfg: RunConfig):
    """Join ``ray.address`` / ``RAY_ADDRESS`` if given, else start a local cluster."""
    from distill_ray.cluster import connect_ray as connect

    return connect(cfg.ray.address, cfg.ray.num_cpus)


# Sources whose exemplars are fixed (GSM8K's hand-written ones, MBPP's prompt split) or absent (HumanEval): no
# train problems are reserved for the pool.
FIXED_EXEMPLARS = ("gsm8k", "mbpp", "humaneval")
ALL_EVAL = 10**9   # "every evaluation problem there is" (a source returns fewer when its data runs out)


def load_task(cfg: RunConfig) -> tuple[list[Exemplar], list[dict], list[dict]]:
    """(exemplar pool, train problems, eval problems): the pool is carved off the train split first, so
    the teacher is never shown the answer of a problem it is asked to solve."""
    from distill_ray.tasks import GSM8K_EXEMPLARS, load_problems

    t = cfg.task
    if t.source == "table":
        return load_table(cfg)
    reserve = 0 if t.source in FIXED_EXEMPLARS else cfg.prompt.pool_size
    families = t.families if t.source in ("puzzles", "p3") else None
    if families != t.families:   # e.g. the demo's puzzle families, with --task-source gsm8k
        log(f"task.families is ignored: task source {t.source!r} has no families")
    quarantine: list[dict] = []
    train, eval_ = load_problems(t.source, num_train=t.num_train + reserve, num_eval=t.num_eval, seed=cfg.seed,
                                 path=t.path, difficulty=t.difficulty, families=families,
                                 max_question_chars=t.max_question_chars, quarantine=quarantine)
    index = eval_index(cfg, families)
    train = list(decontaminate(train, index, quarantine))
    if t.source == "gsm8k":
        pool = [Exemplar(e["question"], e["reference"], e["family"])
                for e in decontaminate(GSM8K_EXEMPLARS, index, quarantine)]
    elif t.source == "mbpp":
        from distill_ray.tasks.functions import read_mbpp

        pool = exemplar_pool(list(decontaminate(read_mbpp(t.path, "prompt"), index, quarantine)))
    else:   # the pool is carved off the train split (humaneval has none: zero-shot, HumanEval's own protocol)
        pool, train = exemplar_pool(train[:reserve]), train[reserve:]
    write_quarantine(Path(cfg.output_dir), quarantine)
    return pool, train, eval_


def eval_index(cfg: RunConfig, families: list[str] | None = None) -> EvalIndex | None:
    """Every evaluation problem of the task's source (its whole eval split, not just the ``num_eval`` a run
    evaluates), indexed for decontamination; None where it is off or not needed (puzzles: disjoint by
    construction)."""
    from distill_ray.tasks import load_problems

    t = cfg.task
    if not t.decontaminate or t.source in ("puzzles", "table"):
        return None
    _, every_eval = load_problems(t.source, num_train=0, num_eval=ALL_EVAL, seed=cfg.seed, path=t.path,
                                  difficulty=t.difficulty, families=families, max_question_chars=t.max_question_chars)
    return EvalIndex(every_eval, t.near_duplicate_threshold)


def load_table(cfg: RunConfig) -> tuple[list[Exemplar], "TableChunks", list[dict]]:
    """A table source: the exemplar pool is its first ``prompt.pool_size`` valid train rows and the eval problems
    its first ``task.num_eval`` eval rows (read here a chunk at a time, until both are found: a table without
    eval rows is scanned to its end). The train problems are the other train rows among its first
    ``task.num_train + prompt.pool_size``, as chunks that Ray Data tasks read where they run."""
    from distill_ray.tasks.table import plan_chunks, read_chunk, table_files

    t, pool_size = cfg.task, cfg.prompt.pool_size
    if not t.path:
        raise ValueError("task source 'table' needs task.path (a Parquet, JSONL, CSV or Arrow file or folder)")
    read = dict(columns=dict(t.columns), kind=t.kind, max_question_chars=t.max_question_chars)
    files = table_files(t.path)
    pool, eval_, quarantine = [], [], []
    train = plan_chunks(files, cfg.chunk_size, limit=t.num_train + pool_size)
    for chunk in plan_chunks(files, cfg.chunk_size):
        if len(pool) >= pool_size and len(eval_) >= t.num_eval:
            break
        problems, bad = read_chunk(chunk, **read)
        if chunk not in train:   # a train chunk's read quarantines its own bad rows
            quarantine += bad
        eval_ += [p for p in problems if p["split"] == "eval"][:t.num_eval - len(eval_)]
        pool += [p for p in problems if p["split"] == "train"][:pool_size - len(pool)]
    index = EvalIndex(eval_, t.near_duplicate_threshold) if t.decontaminate else None
    read["exclude"] = frozenset(p["task_id"] for p in pool)
    read["contamination"] = index   # each train chunk's read drops (quarantines) what matches an eval row
    pool = list(decontaminate(pool, index, quarantine))
    write_quarantine(Path(cfg.output_dir), quarantine)
    return exemplar_pool(pool), TableChunks(train, read, Path(cfg.output_dir) / "quarantine"), eval_


def load_train_source(cfg: RunConfig) -> tuple[list[Exemplar], TableChunks]:
    """(exemplar pool, train problems as a table that Ray Data tasks read chunk by chunk): what ``generate``
    streams. A table source is read where it is; a built-in source's train problems are written as Parquet parts
    of ``chunk_size`` problems under ``<output>/source`` (rewritten on every run: the same config gives the same
    files), the puzzles by a task while the stream runs, so the driver never holds them all."""
    from distill_ray.tasks.table import write_problem_table

    t, out = cfg.task, Path(cfg.output_dir)
    if t.source == "table":
        if written_methods(cfg):
            raise ValueError("gal.prompts / mixup.pairs: a table source is streamed, not held by the driver; GAL "
                             "and mix-up need a built-in or jsonl source")
        exemplars, train, _ = load_table(cfg)
        return exemplars, train
    if t.source == "puzzles" and not written_methods(cfg):
        write_quarantine(out, [])   # a generated source has nothing to quarantine
        return puzzle_source(cfg)
    exemplars, problems, _ = load_task(cfg)
    if written_methods(cfg):   # the real problems are held here then: the writers see them, dedupe against them
        problems = with_generated_inputs(cfg, list(problems))
    return exemplars, TableChunks(write_problem_table(problems, out / "source", cfg.chunk_size), None,
                                  out / "quarantine")


def puzzle_source(cfg: RunConfig) -> tuple[list[Exemplar], TableChunks]:
    """The puzzles' exemplar pool (their first ``prompt.pool_size``, drawn here) and train problems, written as
    parts by a Ray task while the stream already reads the first ones (``tasks/puzzle_parts.py``)."""
    from itertools import islice

    from distill_ray.tasks import puzzle_parts
    from distill_ray.tasks.puzzles import puzzle_problems

    t, reserve = cfg.task, cfg.prompt.pool_size
    puzzles = dict(seed=cfg.seed, difficulty=t.difficulty, families=t.families)
    exemplars = exemplar_pool(list(islice(puzzle_problems(num_train=reserve, num_eval=0, **puzzles), reserve)))
    chunks, writer = puzzle_parts.start(Path(cfg.output_dir) / "source", cfg.chunk_size, reserve, t.num_train,
                                        **puzzles)
    return exemplars, TableChunks(chunks, None, Path(cfg.output_dir) / "quarantine", writer)


def written_methods(cfg: RunConfig) -> list[str]:
    """The methods switched on that have the teachers write new train problems, in the order they run."""
    return [m for m, n in (("gal", cfg.gal.prompts), ("mixup", cfg.mixup.pairs)) if n]


def with_generated_inputs(cfg: RunConfig, train: list[dict]) -> list[dict]:
    """GAL (``gal.py``) and mix-up (``mixup.py``): the real train problems, then the problems the teachers wrote
    that are well-formed, new (to the real ones and to what the other method kept) and not an evaluation problem's
    copy; every written problem's fate goes to ``gal_inputs.jsonl`` / ``mixup_inputs.jsonl``."""
    from distill_ray import gal, mixup
    from distill_ray.pipelines.gal import gal_stages, mixup_stages

    index, teachers, problems = gal_eval_index(cfg), cfg.teacher_list(), list(train)
    if cfg.gal.prompts:
        log(f"gal: {len(teachers)} teacher(s) write {cfg.gal.prompts} x {cfg.gal.samples} new problems each "
            f"from {cfg.gal.shots} real ones per prompt")
        prompts = gal.writer_prompts(train, cfg.gal.prompts, cfg.gal.shots, cfg.seed)
        problems += written_inputs(cfg, "gal", prompts, gal_stages(teachers, cfg.gal, cfg.seed), problems, index)
    if cfg.mixup.pairs:
        log(f"mixup: {len(teachers)} teacher(s) blend {cfg.mixup.pairs} pairs of real problems x "
            f"{cfg.mixup.samples} samples each")
        prompts = mixup.pair_prompts(train, cfg.mixup.pairs, cfg.seed)   # real problems only are paired
        problems += written_inputs(cfg, "mixup", prompts, mixup_stages(teachers, cfg.mixup, cfg.seed), problems,
                                   index)
    return problems


def written_inputs(cfg: RunConfig, method: str, prompts, stages, seen: list[dict], index) -> list[dict]:
    """The kept problems one method's writers wrote; their audit and the counts it logs."""
    from distill_ray import gal

    kept, records = gal.generate_inputs(prompts, stages, seen, index, cfg.task.near_duplicate_threshold)
    path = gal.write_audit(cfg.output_dir, records, method)
    counts = gal.summary(records)
    log(f"{method}: {counts['kept']} of {counts['generated']} written problems kept ({counts['malformed']} "
        f"malformed, {counts['duplicate_exact']} + {counts['duplicate_near']} exact + near duplicates, "
        f"{counts['contaminated']} contaminated) -> {path}")
    return kept


def gal_eval_index(cfg: RunConfig) -> EvalIndex | None:
    """What generated problems are decontaminated against: every evaluation problem of a real source, or the
    run's eval puzzles (procedural train puzzles are disjoint from them by construction; a teacher's are not)."""
    t = cfg.task
    if not t.decontaminate:
        return None
    index = eval_index(cfg, t.families if t.source in ("puzzles", "p3") else None)
    if index is None:
        _, _, eval_problems = load_task(cfg)
        index = EvalIndex(eval_problems, t.near_duplicate_threshold)
    return index


def write_quarantine(out_dir: Path, records: list[dict]) -> Path:
    """``quarantine.jsonl``: every input line that was not used, with its file, line number and reason.
    Rewritten on each load (the same input gives the same quarantine), so a rerun never doubles it."""
    path = out_dir / "quarantine.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    if records:
        log(f"quarantine: {len(records)} malformed input lines -> {path}")
    return path


def sample_problems(problems: list[dict], teachers: list[TeacherConfig], exemplars, cfg: RunConfig, out_dir: Path,
                    vote: bool, num_shots: int | None = None, sampling_seed: int | None = None,
                    recipe=distill_stages):
    """prompt -> teachers -> extract -> verify (-> vote) over Ray Data, written as Parquet shards to ``out_dir``;
    returns the seconds it took (the rows stay on disk: read what you need).
    ``num_shots`` (default ``prompt.num_shots``; 0 for students) and ``sampling_seed`` (default ``seed``) vary
    per use. The dataset (``vote``) resumes a killed run; evaluation outputs are always recomputed (the student at
    a given path changes from run to run). ``recipe``: the stage list's builder, ``distill_stages``' signature
    (``pipelines/decompose.py``'s for decompositional distillation)."""
    prompt_cfg = cfg.prompt if num_shots is None else cfg.prompt.model_copy(update={"num_shots": num_shots})
    # Loaded once, here: a missing or broken critic fails before any work.
    critic_model = Critic.load(cfg.critic.path) if cfg.critic.path else None
    stages = recipe(teachers, prompt_cfg, cfg.verify, exemplars, cfg.seed, vote_cfg=cfg.vote if vote else None,
                    sampling_seed=sampling_seed, critic_model=critic_model,
                    resample_rounds=cfg.critic.resample_rounds if vote else 0)
    params = row_params(cfg.model_dump(exclude={"name", "output_dir", "ray", "train", "eval", "experiment", "resume",
                                                "critic", "mlflow_uri"}))
    if critic_model is not None:   # the critic's weights decide rows: a resumed run must use the same ones
        params["critic"] = [critic_model.digest(), cfg.critic.resample_rounds]
    source = problems if isinstance(problems, TableChunks) else ProblemChunks(problems, cfg.chunk_size)
    return run_in_shards(source, PROBLEM_COLUMNS, stages, out_dir, params, resume=vote and cfg.resume, log=log)


# --- generate ---------------------------------------------------------------------------------------

def generate(cfg: RunConfig) -> dict:
    """Sample the teacher on the train problems, verify, vote and write ``dataset/``."""
    connect_ray(cfg)
    exemplars, train = load_train_source(cfg)
    if not len(train):
        raise ValueError(f"task source {cfg.task.source!r} gave no train problems to generate from (HumanEval "
                         "has none: use it with `distill-ray evaluate`)")
    out = Path(cfg.output_dir) / "dataset"
    teachers = cfg.teacher_list()
    log(f"generate: {train.rows():,} {'table rows' if cfg.task.source == 'table' else 'train problems'} in "
        f"{len(train)} chunks x " + ", ".join(f"{t.samples} samples from teacher {t.name!r}" for t in teachers))
    try:
        seconds = sample_problems(train, teachers, exemplars, cfg, out, vote=True)
    except Exception:
        train.raise_writer_error()   # if the source's writer failed, its own error says why, not the waiting read
        raise
    train.written()   # ended by now (every part was read); a writer that wrote other parts than planned fails here
    quarantine = Path(cfg.output_dir) / "quarantine.jsonl"
    train.merge_quarantine(quarantine)
    shards = (table.to_pandas() for _, table in ShardSet(out).iter_tables(STATS_COLUMNS))
    stats = generation_stats(shards, seconds, sum(t.samples for t in teachers))
    stats["contaminated"] = contaminated_count(json.loads(line) for line in quarantine.read_text().splitlines())
    stats["retried"] = Manifest.for_output(out).load().get("retried", {})
    for method in written_methods(cfg):   # written problems: how many were generated, dropped (and why) and kept
        from distill_ray import gal

        stats[method] = gal.summary(gal.read_audit(cfg.output_dir, method))
    if any(stats["retried"].values()):
        log(f"generate: retried after failures: {stats['retried']} (each row is still in the dataset once)")
    if stats["contaminated"]:
        log(f"generate: {stats['contaminated']} train problems or exemplars matched an evaluation problem and were "
            f"dropped (reasons in {quarantine})")
    write_manifest(out, cfg, stats)
    with mlflow_run(cfg.mlflow_uri, f"{cfg.name}/generate", cfg.model_dump()) as tracking:
        if tracking is not None:
            tracking.log({f"generate/{k}": v for k, v in numbers(stats).items()})
    log(f"generate: {stats['verified']}/{stats['candidates']} candidates verified, {stats['kept']} kept "
        f"-> {out}")
    return {"dataset": str(out), **stats}


def write_manifest(dataset_dir: Path, cfg: RunConfig, stats: dict) -> Path:
    """``<dataset>.manifest.json`` beside the dataset: its version, the config that made it, its files and
    counts (beside, not inside: Parquet readers of the directory must see only data files)."""
    from distill_ray import __version__

    files = sorted(dataset_dir.glob("*.parquet"))
    manifest = Manifest.for_output(dataset_dir)   # already holds the resume parameters: add to it
    manifest.update(
        dataset=dataset_dir.name, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), distill_ray_version=__version__,
        config=cfg.model_dump(), stats=stats,
        files=[{"name": f.name, "rows": pq.ParquetFile(f).metadata.num_rows} for f in files],
        columns=pq.read_schema(files[0]).names if files else [])
    return manifest.path


STATS_COLUMNS = ["task_id", "teacher", "passed", "keep", "duplicate", "agreement", "label_type", "status",
                 "completion_tokens", "gen_seconds"]


def generation_stats(shards, seconds: float, n: int) -> dict:
    """Funnel counts, agreement/disagreement sets, and tokens/s overall and per teacher, from the dataset's
    shards (DataFrames of ``STATS_COLUMNS``) one at a time: a problem's rows are all in one shard, so per-shard
    sums add up, and the driver holds one shard and two integers per problem. ``n``: candidates per problem
    (all teachers together)."""
    totals, status, teachers = Counter(), Counter(), defaultdict(Counter)
    sizes, verified = [], []
    for rows in shards:
        per_task = rows.groupby("task_id")["passed"].agg(["size", "sum"])
        sizes.append(per_task["size"].to_numpy(np.int32))
        verified.append(per_task["sum"].to_numpy(np.int32))
        agreement = rows.groupby("task_id")["agreement"].first()
        kept = rows[rows["keep"]]
        totals.update(candidates=len(rows), verified=int(rows["passed"].sum()), kept=len(kept),
                      duplicates=int(rows["duplicate"].sum()), agreement_problems=int(agreement.sum()),
                      disagreement_problems=int((~agreement).sum()),
                      kept_hard=int((kept["label_type"] == "hard").sum()),
                      kept_soft=int((kept["label_type"] == "soft").sum()),
                      completion_tokens=int(rows["completion_tokens"].sum()))
        status.update({str(k): int(v) for k, v in rows["status"].value_counts().items()})
        for name, g in rows.groupby("teacher", sort=True):
            teachers[str(name)].update(candidates=len(g), verified=int(g["passed"].sum()),
                                       completion_tokens=int(g["completion_tokens"].sum()))
            teachers[str(name)]["gen_seconds"] += float(g["gen_seconds"].sum())
    sizes, verified = (np.concatenate(a) if a else np.zeros(0, np.int32) for a in (sizes, verified))
    k = min(n, int(sizes.min())) if len(sizes) else n
    tokens = totals["completion_tokens"]
    return {
        "problems": len(sizes), **{key: totals[key] for key in (
            "candidates", "verified", "kept", "duplicates", "agreement_problems", "disagreement_problems",
            "kept_hard", "kept_soft")},
        "per_teacher": {name: per_teacher(t) for name, t in sorted(teachers.items())},
        "status_counts": dict(status),
        "verified_rate": totals["verified"] / totals["candidates"] if totals["candidates"] else 0.0,
        "k": k, "train_pass_at_k": float(sum(pass_at_k(int(s), int(c), k) for s, c in zip(sizes, verified))
                                         / max(len(sizes), 1)),
        "completion_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds if seconds else 0.0,
    }


def per_teacher(counts: Counter) -> dict:
    """A teacher's candidates, verified, tokens, and tokens/s while generating (tokens over the summed
    generation time of its batches, i.e. per actor-second; each row carries its share of its batch's time)."""
    gen_seconds, tokens = float(counts["gen_seconds"]), int(counts["completion_tokens"])
    return {"candidates": int(counts["candidates"]), "verified": int(counts["verified"]), "completion_tokens": tokens,
            "gen_seconds": gen_seconds, "tokens_per_s": tokens / gen_seconds if gen_seconds else 0.0}


def critic(cfg: RunConfig, dataset_dir: str | None = None, out_dir: str | None = None) -> dict:
    """Train the correctness critic on a dataset's verified rows; write it (weights and report) to ``out_dir``
    (default ``critic.path``, else ``<output_dir>/critic``) and return its report."""
    data = Path(dataset_dir) if dataset_dir else Path(cfg.output_dir) / "dataset"
    columns = ["task_id", "program", "sat", "question", "finished", "passed", "status"]
    rows = pd.concat([t.to_pandas() for _, t in ShardSet(data).iter_tables(columns)], ignore_index=True)
    c = cfg.critic
    model, report = train_critic(rows, c.target_precision, c.held_out, c.hash_bits, c.l2)
    out = Path(out_dir or c.path or Path(cfg.output_dir) / "critic")
    model.save(out, {"dataset": str(data), **report})
    test = report["test"]
    log(f"critic: held-out precision {test['precision']} recall {test['recall']} (base rate {test['base_rate']}, "
        f"AUC {test['auc']}); its top candidate passes {test['rerank_top1_pass']} vs a random one's "
        f"{test['random_pick_pass']} -> {out}")
    return {"critic": str(out), **report}


def retriever(cfg: RunConfig, out_dir: str | None = None, num_queries: int = 96, num_candidates: int = 12,
              epochs: int = 40) -> dict:
    """EPR (``epr.py``): score candidate exemplars with the (first) teacher, train the dense retriever, write it
    to ``out_dir`` (default ``<output_dir>/retriever``) and return its report. The scored problems are the
    ``num_queries`` train problems that follow the run's own ``task.num_train`` (same seed, same exemplar pool,
    read through the same decontaminating load): a ``generate`` with this config never solves one of them."""
    from distill_ray import epr
    from distill_ray.teachers.hf import HFEngine

    t, teacher = cfg.task, cfg.teacher_list()[0]
    if t.source == "table" or teacher.engine not in ("hf", "vllm"):
        raise ValueError("distill-ray retriever needs a built-in task source and a teacher model transformers "
                         f"can load (got task.source {t.source!r}, teacher.engine {teacher.engine!r})")
    out = Path(out_dir or Path(cfg.output_dir) / "retriever")
    wider = cfg.model_copy(update={"output_dir": str(out), "task": t.model_copy(
        update={"num_train": t.num_train + num_queries})})
    pool, train, _ = load_task(wider)
    solved = {p["question"] for p in train[:t.num_train]}
    queries = [p for p in train[t.num_train:] if p.get("reference") and p["question"] not in solved][:num_queries]
    if not queries or len(pool) < 2:
        raise ValueError(f"nothing to train a retriever on: {len(queries)} problems with references, pool of {len(pool)}")
    engine = HFEngine(teacher.model, torch_threads=teacher.torch_threads)   # loaded as the teacher stage loads it
    log(f"retriever: scoring {len(queries)} problems x {min(num_candidates, len(pool))} exemplars with {teacher.model}")
    trained, report = epr.build_retriever(engine.model, engine.tokenizer, queries, pool, num_candidates=num_candidates,
                                          prompt_style=teacher.prompt_style, seed=cfg.seed, epochs=epochs, log=log)
    scored = report.pop("scored")
    report = {"teacher": teacher.model, "task_source": t.source, "seed": cfg.seed,
              "query_task_ids": [q["task_id"] for q in queries], **report}
    trained.save(out, report)
    (out / "scores.jsonl").write_text("".join(json.dumps({"task_id": q["task_id"], **row}) + "\n"
                                              for q, row in zip(queries, scored)))
    hits = report["held_out_top1_in_positives"]
    log(f"retriever: held-out top-1 among the LM's positives: retriever {hits['retriever']}, BM25 {hits['bm25']}, "
        f"same family + BM25 {hits['retrieved']}, random {hits['random']} -> {out} (digest {trained.digest[:12]})")
    return {"retriever": str(out), "digest": trained.digest,
            **{k: v for k, v in report.items() if k != "query_task_ids"}}


def reverify(cfg: RunConfig, dataset_dir: str | None = None) -> dict:
    """Re-run every row's own check (rows are self-contained) and compare with the stored verdicts."""
    import ray

    from distill_ray.stages import verify

    connect_ray(cfg)
    dataset_dir = dataset_dir or str(Path(cfg.output_dir) / "dataset")
    stored = ray.data.read_parquet(dataset_dir)
    stage = verify.build(cfg.verify)
    fresh = apply_stages(stored.drop_columns(list(stage.writes)), stage.reads, [stage])
    rows = fresh.to_pandas()
    before = pq.read_table(dataset_dir, columns=["task_id", "teacher", "sample_index", "passed"]).to_pandas()
    merged = rows.merge(before, on=["task_id", "teacher", "sample_index"], suffixes=("", "_stored"))
    return {"rows": len(rows), "passed": int(rows["passed"].sum()),
            "agree_with_stored": int((merged["passed"] == merged["passed_stored"]).sum())}


# --- train ------------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def student_rows(batch: pd.DataFrame, tokenizer_dir: str, same_vocab: tuple[str, ...] = ()) -> pd.DataFrame:
    """Training view of kept candidates: the zero-shot prompt the student will see, and what it must write.
    Rows of the teachers in ``same_vocab`` (the student's own vocabulary) that stored logprobs get
    ``teacher_topk`` for the target's tokens, where they line up (see ``aligned_topk``)."""
    from distill_ray.train.data import aligned_topk

    tokenizer = _tokenizer(tokenizer_dir)
    prompts, targets = [], []
    for kind, question, program in zip(batch["kind"], batch["question"], batch["program"]):
        prefix = response_prefix(kind, question)
        messages = build_messages(kind, question, [])
        prompts.append(render(tokenizer, messages, prefix))
        targets.append(program[len(prefix):] if program.startswith(prefix) else program)
    rows = pd.DataFrame({"task_id": batch["task_id"], "prompt_text": prompts, "target_text": targets})
    if "label_weight" in batch:   # soft labels
        rows["label_weight"] = batch["label_weight"].values
    if "teacher_topk" in batch:   # a dataset that brings its own top-k
        rows["teacher_topk"] = batch["teacher_topk"].values
    elif "logprobs" in batch and batch["logprobs"].notna().any():
        rows["teacher_topk"] = [aligned_topk(tokenizer, completion, target, lp) if teacher in same_vocab else None
                                for teacher, completion, target, lp in
                                zip(batch["teacher"], batch["completion"], targets, batch["logprobs"])]
    return rows


def student_model_dir(cfg: RunConfig) -> Path:
    """The Hugging Face directory the student starts from (``train.student``; 'teacher': the first teacher's)."""
    return resolve_model(cfg.teacher_list()[0].model if cfg.train.student == "teacher" else cfg.train.student)


def build_student_init(cfg: RunConfig, out: Path) -> Path:
    """``<out>/student_init``: the student's model, cut to ``train.student_layers`` where set (and then healed
    for ``train.heal_steps`` on general text)."""
    from distill_ray.train import build_student
    from distill_ray.train.heal import heal_student

    t = cfg.train
    model_dir = student_model_dir(cfg)
    if not (t.student_layers and t.heal_steps):
        return build_student(model_dir, out / "student_init", num_layers=t.student_layers)
    cut = build_student(model_dir, out / "student_cut", num_layers=t.student_layers)
    connect_ray(cfg)
    log(f"train: healing the {t.student_layers}-layer student: {t.heal_steps} steps of kd from {model_dir.name} "
        "on general text")
    return heal_student(cut, model_dir, out / "student_init", t.heal_steps, train_settings(cfg, lr=t.heal_lr))


def train_settings(cfg: RunConfig, teacher_dir: Path | None = None, **changes) -> "TrainSettings":
    """The trainer's settings: ``train``, the run's seed and teacher (``changes`` override single fields)."""
    from distill_ray.train import TrainSettings

    return TrainSettings(**{**cfg.train.model_dump(), "seed": cfg.seed, "mlflow_uri": cfg.mlflow_uri,
                            "teacher_dir": str(teacher_dir) if teacher_dir else None, **changes})


def same_vocabulary_teachers(cfg: RunConfig, student_dir: Path) -> dict[str, Path]:
    """Teachers (name -> model directory) whose tokenizer is the student's: only their stored top-k ids mean
    the same tokens to the student, and only they can be loaded as the kd/swing teacher."""
    vocabulary = _tokenizer(str(student_dir)).get_vocab()
    out = {}
    for t in cfg.teacher_list():
        model_dir = resolve_model(t.model)
        if _tokenizer(str(model_dir)).get_vocab() == vocabulary:
            out[t.name] = model_dir
    return out


def check_token_level(objectives: dict, same_vocab: dict, student: str) -> None:
    """kd and swing compare token distributions, rkd the teacher model's embeddings of the student's token ids:
    they need a teacher whose tokenizer is the student's."""
    from distill_ray.train.objectives import TEACHER_MODEL_TERMS

    chosen = {name for name, weight in objectives.items() if weight}
    token_level = sorted(set(TEACHER_MODEL_TERMS) & chosen)
    if token_level and not same_vocab:
        raise ValueError(f"train.objectives {token_level} read the student's token ids with a teacher model or its "
                         f"token distributions, but no teacher shares the student's tokenizer (student {student!r}): "
                         "use sft, soft or icl, or a student with a teacher's tokenizer")


def train(cfg: RunConfig, dataset_dir: str | None = None, init_dir: str | Path | None = None) -> dict:
    """Build the student (``train.student``, cut where asked; or start from ``init_dir``, a student_init built
    before) and fine-tune it on the kept candidates."""
    import ray
    from ray.data.expressions import col

    from distill_ray.train import train_student

    if cfg.train.mode == "on_policy":
        return train_on_policy(cfg, init_dir)
    connect_ray(cfg)
    out = Path(cfg.output_dir)
    dataset_dir = dataset_dir or str(out / "dataset")
    t = cfg.train
    init_dir = Path(init_dir) if init_dir else build_student_init(cfg, out)
    same_vocab = same_vocabulary_teachers(cfg, init_dir)
    # A staged run's phases each need what their own objectives read.
    check_token_level({k: w for s in t.stages for k, w in s.objectives.items()} or dict(t.objectives), same_vocab,
                      t.student)
    kept = ray.data.read_parquet(dataset_dir).filter(expr=col("keep") == True)  # noqa: E712 (an expression)
    data = kept.map_batches(student_rows, fn_kwargs={"tokenizer_dir": str(init_dir),
                                                     "same_vocab": tuple(same_vocab)}, batch_format="pandas")
    settings = train_settings(cfg, next(iter(same_vocab.values()), None))
    log(f"train: student {describe_student(cfg)}, {t.workers} Ray Train workers, DeepSpeed ZeRO-{t.zero_stage}, "
        f"objectives {[dict(s.objectives) for s in t.stages] or dict(t.objectives)}")
    result = train_student(init_dir, data, out / "student", settings)
    summary = {"student": result.output_dir, "student_init": str(init_dir), "objectives": dict(t.objectives),
               "base": describe_student(cfg), "steps": result.steps,
               "samples": result.samples, "tokens": result.tokens, "seconds": result.seconds,
               "loss_history": result.loss_history, "stages": result.stages,
               "loss_first": result.loss_history[0] if result.loss_history else float("nan"),
               "loss_last": result.loss_history[-1] if result.loss_history else float("nan")}
    log(f"train: {result.steps} steps, loss {summary['loss_first']:.3f} -> {summary['loss_last']:.3f} "
        f"-> {result.output_dir}")
    return summary


def train_on_policy(cfg: RunConfig, init_dir: str | Path | None = None) -> dict:
    """On-policy distillation (``train.mode: on_policy``): the student samples the train problems, the teachers
    score its tokens, the verifier judges; no dataset is read."""
    from distill_ray.onpolicy import ScoringTeacher, train_on_policy as run_on_policy
    from distill_ray.onpolicy.problems import on_policy_problems
    from distill_ray.stages.teacher import engine_options

    connect_ray(cfg)
    out = Path(cfg.output_dir)
    op = cfg.on_policy
    init_dir = Path(init_dir) if init_dir else build_student_init(cfg, out)
    exemplars, train_problems, _ = load_task(cfg)
    if isinstance(train_problems, TableChunks):   # on-policy samples problems from a list in the driver
        train_problems = train_problems.problems()
    chosen = [t for t in cfg.teacher_list() if op.teachers is None or t.name in op.teachers]
    unknown = set(op.teachers or ()) - {t.name for t in cfg.teacher_list()}
    if unknown or not chosen:
        raise ValueError(f"on_policy.teachers {sorted(op.teachers)} must name teachers of this run "
                         f"({[t.name for t in cfg.teacher_list()]})")
    teachers = [ScoringTeacher(t.name, str(resolve_model(t.model)), t.weight, t.engine, engine_options(t))
                for t in chosen]
    problems = on_policy_problems(train_problems, exemplars, _tokenizer(str(init_dir)),
                                  [_tokenizer(t.model_dir) for t in teachers], cfg.prompt, cfg.seed, op.teacher_context,
                                  [t.prompt_style for t in chosen])
    log(f"train: on-policy distillation of {describe_student(cfg)} from {[t.name for t in teachers]}: {op.steps} "
        f"steps x {cfg.train.workers} workers x {op.prompts_per_step} problems x {op.samples} samples, beta "
        f"{op.beta}, verifier {op.verifier}")
    result = run_on_policy(init_dir, problems, teachers, out / "student", train_settings(cfg), op, cfg.verify)
    history = result.history
    summary = {"student": result.output_dir, "student_init": str(init_dir), "mode": "on_policy",
               "objectives": {"on_policy": 1.0}, "on_policy": op.model_dump(),
               "base": describe_student(cfg), "steps": result.steps, "samples": result.samples,
               "tokens": result.tokens, "seconds": result.seconds, "loss_history": result.loss_history,
               "loss_first": result.loss_history[0] if result.loss_history else float("nan"),
               "loss_last": result.loss_history[-1] if result.loss_history else float("nan"), "history": history}
    log(f"train: {result.steps} on-policy steps, reverse KL {history[0]['reverse_kl']:.3f} -> "
        f"{history[-1]['reverse_kl']:.3f}, verified {history[0]['verified']:.2f} -> {history[-1]['verified']:.2f} "
        f"-> {result.output_dir}")
    return summary


def describe_student(cfg: RunConfig) -> str:
    model = cfg.teacher_list()[0].model if cfg.train.student == "teacher" else cfg.train.student
    layers = f"{cfg.train.student_layers} layers of " if cfg.train.student_layers else ""
    return f"{layers}{model}"


# --- evaluate ---------------------------------------------------------------------------------------

def evaluate(cfg: RunConfig, models: dict[str, str] | None = None) -> dict:
    """pass@k of each model on the held-out problems; the teacher is prompted few-shot, students zero-shot."""
    connect_ray(cfg)
    exemplars, _, eval_problems = load_task(cfg)
    out = Path(cfg.output_dir)
    models = models or default_eval_models(cfg)
    e = cfg.eval
    results = {}
    for label, model in models.items():
        is_teacher = label == "teacher" or label.startswith("teacher:")
        sampler = eval_sampler(cfg, label, model)
        log(f"evaluate: {label} ({model}) on {len(eval_problems)} problems x {e.samples} samples")
        sample_problems(eval_problems, [sampler], exemplars, cfg, out / "eval" / label, vote=False,
                        num_shots=None if is_teacher else 0, sampling_seed=cfg.seed + 1)
        columns = ["task_id", "sample_index", "passed"] + (["critic_score"] if cfg.critic.path else [])
        rows = pq.read_table(out / "eval" / label, columns=columns).to_pandas()
        counts = {t: (len(g), int(g["passed"].sum())) for t, g in rows.groupby("task_id")}
        results[label] = summarize_passk(counts, e.k)
        if cfg.critic.path:
            results[label]["critic@1"] = critic_pick(rows)
        log(f"evaluate: {label} pass@1 = {results[label]['pass@1']['mean']:.3f}" if 1 in e.k else f"evaluate: {label} done")
    with mlflow_run(cfg.mlflow_uri, f"{cfg.name}/evaluate", cfg.model_dump()) as tracking:
        if tracking is not None:   # per model: evaluate/<model>.pass_at_<k>.mean
            tracking.log({f"evaluate/{k}": v for k, v in numbers(results).items()
                          if k.endswith(".mean") or k.endswith("critic@1")})
    return results


def critic_pick(rows: pd.DataFrame) -> dict:
    """The pass rate of each problem's one sample the critic scores highest (ties: the first sample), against
    pass@1 (a random sample): what the critic's ranking is worth where no verifier runs at inference."""
    rows = rows.sort_values(["task_id", "sample_index"], kind="stable")
    mean, problems = top_pick_pass(rows["task_id"], rows["critic_score"], rows["passed"])
    return {"mean": mean, "problems": problems}


def default_eval_models(cfg: RunConfig) -> dict[str, str]:
    """``teacher`` (or ``teacher:<name>`` for each of several teachers), then the students that exist."""
    out = Path(cfg.output_dir)
    teachers = cfg.teacher_list()
    models = {}
    for label in cfg.eval.models:
        if label == "teacher" and len(teachers) == 1:
            models["teacher"] = teachers[0].model
        elif label == "teacher":
            models.update({f"teacher:{t.name}": t.model for t in teachers})
        elif Path(out / label).exists():
            models[label] = str(out / label)
    return models


def eval_sampler(cfg: RunConfig, label: str, model: str, samples: int | None = None) -> TeacherConfig:
    """How ``model`` is sampled at evaluation: its engine settings (``eval_teacher_config``), ``eval``'s sampling."""
    e = cfg.eval
    return eval_teacher_config(cfg, label).model_copy(update=dict(
        name=label, model=model, samples=samples or e.samples, temperature=e.temperature,
        max_new_tokens=e.max_new_tokens, top_k_logprobs=0))


def eval_teacher_config(cfg: RunConfig, label: str) -> TeacherConfig:
    """The engine settings to sample a model with: its own teacher's for teachers, ``teacher``'s for students."""
    teachers = {f"teacher:{t.name}": t for t in cfg.teacher_list()}
    if label == "teacher":
        return cfg.teacher_list()[0]
    return teachers.get(label, cfg.teacher)


# --- run --------------------------------------------------------------------------------------------

def run(cfg: RunConfig) -> dict:
    """The whole loop: generate -> train -> evaluate -> report."""
    start = time.perf_counter()
    out = Path(cfg.output_dir)
    generation = generate(cfg)
    training = train(cfg) if cfg.train.enabled and generation["kept"] > 0 else None
    if cfg.train.enabled and not generation["kept"]:
        log("train: skipped, no verified candidate to learn from")
    evaluation = evaluate(cfg)
    report = {
        "name": cfg.name, "config": cfg.model_dump(), "generation": generation, "training": training,
        "evaluation": evaluation, "eval_k": cfg.eval.k, "seconds": time.perf_counter() - start,
        "funnel": {"problems": generation["problems"], "candidates": generation["candidates"],
                   "verified": generation["verified"], "kept": generation["kept"],
                   "agreement_problems": generation["agreement_problems"],
                   "disagreement_problems": generation["disagreement_problems"],
                   "trained_rows": generation["kept"] if training else 0},
    }
    report["outputs"] = {"dataset": str(out / "dataset"), "student": str(out / "student"),
                         "report": str(out / "report.md"), "plot": str(out / "report.png")}
    paths = write_report(report, out)
    if training:
        write_model_card(Path(training["student"]), report)
    log(f"done in {report['seconds']:.0f} s: report {paths['md']}, plot {paths['png']}, "
        f"dataset {out / 'dataset'}, student {out / 'student'}")
    return report
